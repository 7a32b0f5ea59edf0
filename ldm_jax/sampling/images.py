"""Image grids written as PNG (Pillow)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [..., H, W, C] in [-1, 1] -> uint8 in [0, 255]."""
    x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.round(x).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """Tiles images row-major into a grid.

    Args:
      images: [N, H, W, C] float in [-1, 1].
      columns: images per row (rows = ceil(N / columns)).
      padding: pixels of black between tiles.

    Returns:
      uint8 [rows*(H+p)+p, columns*(W+p)+p, C] with C in {1, 3}.
    """
    n, h, w, c = images.shape
    rows = -(-n // columns)
    tiles = to_uint8(images)
    grid = np.zeros(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8
    )
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = tiles[i]
    return grid


def save_png(path: str, grid: np.ndarray) -> str:
    """Writes a uint8 [H, W, 1|3] image as PNG (creating the folder); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path
