"""sRGB -> CIELAB (D65), the perceptual colour space in which emoji colours are clustered.

CIELAB makes Euclidean distance roughly proportional to perceived colour difference, so nearest
centroids there group colours as a viewer would (a dark red stays nearer red than black).
Formulas of IEC 61966-2-1 (sRGB transfer curve and RGB -> XYZ matrix) and CIE 15 (XYZ -> L*a*b*
with the D65 white point), in float64.
"""

from __future__ import annotations

import numpy as np

# IEC 61966-2-1: linear sRGB -> CIE XYZ (D65).
_RGB_TO_XYZ = np.array(
    [
        [0.4124, 0.3576, 0.1805],
        [0.2126, 0.7152, 0.0722],
        [0.0193, 0.1192, 0.9505],
    ]
)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])  # XYZ of the reference white (Y = 1).
_EPSILON = (6 / 29) ** 3  # Below it CIE's cube root turns into a line.


def _linear_table() -> np.ndarray:
    """float64 [256]: the sRGB transfer curve undone for every uint8 value."""
    c = np.arange(256) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _linear_table()


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] sRGB -> float64 [..., 3] (L* in [0, 100], a*, b* about [-128, 127]).

    Raises:
      ValueError: the input is not uint8 with a last axis of 3.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise ValueError(f"srgb_to_lab expects uint8 [..., 3], got {rgb.dtype} {rgb.shape}.")
    xyz = _LINEAR[rgb] @ _RGB_TO_XYZ.T / D65_WHITE  # [..., 3], white -> (1, 1, 1)
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)
