"""Decode dataset images and masks into fixed-size numpy arrays.

Pixels are used as stored: EXIF orientation is not applied, so an image and its mask (which
carries no EXIF) stay aligned pixel for pixel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from components.data.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

# Everything Pillow raises for a file it cannot fully decode: unknown format and zero-byte files
# (UnidentifiedImageError, an OSError), truncated or corrupt streams (OSError, SyntaxError,
# EOFError), bad headers (ValueError) and pixel-count bombs.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}


@dataclass(frozen=True)
class ImageInfo:
    """What validation needs from a fully decoded file: its stored size and channel count."""

    width: int
    height: int
    channels: int


@dataclass(frozen=True)
class MaskInfo:
    """What validation needs from a fully decoded mask: its stored size and how much it marks."""

    width: int
    height: int
    anomalous_pixels: int


MAX_LISTED_MASK_VALUES = 5

ImageFile = str | os.PathLike[str] | BinaryIO
"""A path, or an open binary stream such as `io.BytesIO` of encoded bytes."""


def _decode(path: ImageFile) -> Image.Image:
    """Open and fully decode `path`, so corrupt or truncated files fail here, not mid-training."""
    try:
        with Image.open(path) as image:
            image.load()
    except _DECODE_ERRORS as exc:
        name = path if isinstance(path, (str, os.PathLike)) else "from the given bytes"
        raise DatasetError(
            f"cannot read image {name} ({type(exc).__name__}: {exc}); "
            "replace it with an intact copy (re-download or re-export it) or delete it"
        ) from exc
    return image


def probe_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Decode `path` once and report its stored size and channel count."""
    image = _decode(path)
    return ImageInfo(width=image.width, height=image.height, channels=_channels(image))


def stored_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the file's header alone, for files the dataset scan has decoded already."""
    with Image.open(path) as image:
        return image.size


def probe_mask(path: str | os.PathLike[str]) -> MaskInfo:
    """Decode a mask once; DatasetError naming the file unless it holds 0 and at most one other value.

    A mask says normal or anomalous per pixel, nothing in between. A 0..255 gradient, anti-aliased
    edges or JPEG ringing would otherwise be read as "any nonzero is anomalous" and silently grow
    the defect, which corrupts pixel AUROC and AUPRO, the metrics that decide promotion.
    """
    image = _decode(path)
    colours = _colours(image)
    codes, first = np.unique(_pixel_codes(colours), return_index=True)
    marked = [index for code, index in zip(codes.tolist(), first.tolist(), strict=True) if code != 0]
    if len(marked) > 1:
        flat = colours.reshape(-1, colours.shape[-1])
        shown = ", ".join(_value_text(flat[index]) for index in marked[:MAX_LISTED_MASK_VALUES])
        raise DatasetError(
            f"mask {path} is not binary: besides 0 it holds {len(marked)} values (e.g. {shown}); a mask holds 0 "
            "(normal) and one other value (anomalous): re-export it as PNG with only 0 and 255 (JPEG compression, "
            "anti-aliasing and gradients add in-between values)"
        )
    anomalous = int((colours != 0).any(axis=-1).sum())
    return MaskInfo(width=image.width, height=image.height, anomalous_pixels=anomalous)


def load_image(path: ImageFile, size: int, channels: int) -> np.ndarray:
    """Return a uint8 (channels, size, size) array.

    Resampling is BICUBIC: Pillow widens its kernel when downsampling, so it antialiases like
    LANCZOS, but with less overshoot; LANCZOS ringing adds halos at edges, exactly the fine
    detail that reconstruction residuals already over-detect.
    """
    _check_size(size)
    if channels not in _MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    image = _to_mode(_decode(path), _MODE_FOR_CHANNELS[channels])
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    return np.ascontiguousarray(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1))


def load_mask(path: str | os.PathLike[str], size: int | tuple[int, int] | None) -> np.ndarray:
    """Return a bool mask; any nonzero colour value marks the pixel anomalous.

    The dataset scanner has already rejected masks that are not binary (`probe_mask`), so "nonzero"
    here is the one marking value.

    `size`: an int gives (size, size), a tuple (height, width), None the file's own resolution. The
    mask is thresholded at native resolution, then resized with NEAREST so it stays binary.
    """
    anomalous = Image.fromarray(_nonzero(_decode(path)).astype(np.uint8) * 255)
    if size is None:
        return np.asarray(anomalous) > 0
    height, width = (size, size) if isinstance(size, int) else size
    _check_size(height)
    _check_size(width)
    if anomalous.size != (width, height):
        anomalous = anomalous.resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(anomalous) > 0


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")


def _channels(image: Image.Image) -> int:
    if image.mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        return 1 if bool((rgb == rgb[..., :1]).all()) else 3
    return 1 if Image.getmodebase(image.mode) == "L" else 3


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to L or RGB; 16-bit grayscale is rescaled, because Pillow would clip it at 255."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)


def _nonzero(image: Image.Image) -> np.ndarray:
    """Per-pixel 'any colour value nonzero', ignoring alpha; palette indices are mapped to colours."""
    return (_colours(image) != 0).any(axis=-1)


def _colours(image: Image.Image) -> np.ndarray:
    """(H, W, C) colour values without alpha; palette indices are mapped to their colours."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGB")
    values = np.asarray(image)
    if values.ndim == 2:
        return values[..., None]
    return values[..., :-1] if image.mode in _ALPHA_MODES else values


def _pixel_codes(colours: np.ndarray) -> np.ndarray:
    """One number per pixel, equal for equal colours and 0 only for black: np.unique is then fast."""
    if colours.shape[-1] == 1:
        return colours[..., 0]
    return sum(colours[..., i].astype(np.int64) << (8 * i) for i in range(colours.shape[-1]))


def _value_text(colour: np.ndarray) -> str:
    values = colour.tolist()
    return str(values[0]) if len(values) == 1 else str(tuple(values))
