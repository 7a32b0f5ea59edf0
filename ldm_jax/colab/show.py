"""Inline images in notebooks: sample grids, side-by-side panels, and uploads as arrays."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ldm_jax.sampling import images as image_grid

# Small samples (32x32 Fashion-MNIST) are enlarged to at least this many pixels per side.
MIN_DISPLAY_SIDE = 96


def grid_image(images: np.ndarray, columns: int) -> Image.Image:
    """A PIL image of `images` [N, H, W, C] in [-1, 1] as a grid, enlarged (nearest) when small."""
    grid = image_grid.make_grid(np.asarray(images), columns)  # [H', W', C] uint8
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    picture = Image.fromarray(grid)
    side = images.shape[1]
    scale = max(1, -(-MIN_DISPLAY_SIDE // side))
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def show_grid(images: np.ndarray, columns: int, title: str | None = None) -> Image.Image:
    """Displays `images` [N, H, W, C] in [-1, 1] as a grid in the cell's output; returns it."""
    from IPython.display import Markdown, display

    picture = grid_image(images, columns)
    if title:
        display(Markdown(f"**{title}**"))
    display(picture)
    return picture


def show_panels(pictures: Sequence[Image.Image], titles: Sequence[str], width: float = 14.0):
    """Displays PIL images side by side with a title over each (e.g. a guidance sweep)."""
    from IPython.display import Image as IPythonImage
    from IPython.display import display
    from matplotlib.figure import Figure

    if len(pictures) != len(titles):
        raise ValueError(f"{len(pictures)} pictures but {len(titles)} titles.")
    aspect = max(p.height / p.width for p in pictures) if pictures else 1.0
    figure = Figure(figsize=(width, width / max(len(pictures), 1) * aspect + 0.6), dpi=80)
    for i, (picture, title) in enumerate(zip(pictures, titles, strict=True)):
        axes = figure.add_subplot(1, len(pictures), i + 1)
        axes.imshow(np.asarray(picture), cmap="gray" if picture.mode == "L" else None)
        axes.set_title(title)
        axes.axis("off")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    display(IPythonImage(data=buffer.getvalue()))


def decode_upload(content: bytes) -> np.ndarray:
    """An uploaded image file's bytes as uint8 [H, W, C] (RGB or L kept as they are).

    Raises:
      ValueError: if the bytes are not an image Pillow can read.
    """
    try:
        picture = Image.open(io.BytesIO(content))
        picture.load()
    except Image.UnidentifiedImageError:
        raise ValueError(
            "the uploaded file is not an image Pillow can read (PNG, JPEG, ...)."
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt image data
        raise ValueError(f"the uploaded image is damaged ({e}).") from None
    if picture.mode not in ("RGB", "L"):
        picture = picture.convert("RGB")
    array = np.asarray(picture)
    return array[..., None] if array.ndim == 2 else array
