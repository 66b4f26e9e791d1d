"""Images as pictures: JPEG data URLs (rc3's ``value/plain``) and PNGs (``value/image``).

Pure functions (no HTTP): numbers in, encoded bytes or data URLs out.

``value/plain`` (``jpeg_data_url``): the numbers are scaled linearly from their own
minimum..maximum to 0..255 grey levels, so any numeric image type gives a visible picture; the
exact values stay available from ``value``.

``value/image`` (``image_png``), what each image gives:

- numeric images (every integer and float type, booleans as 0/1): scaled linearly from the
  minimum..maximum of their finite pixels, or from ``low``..``high`` when given (pixels outside
  are clipped), to 0..255, rounded to the nearest integer; with ``low == high`` a threshold
  (below: 0, at or above: 255). A flat image (all pixels equal) is all 0.
- 8-bit images (``uint8``, Tango's DevUChar) are shown as they are: the pixel value is the
  level, unless ``low`` or ``high`` is given (then scaled as above).
- the level is a grey (``cmap="gray"``) or an entry of the viridis table (``cmap="viridis"``).
- NaN and infinite pixels are transparent (the PNG then has an alpha channel; otherwise none).
- DevEncoded images (``encoded_png``): Tango's raw ``GRAY8`` and ``GRAY16`` are numeric images
  (8-bit and 16-bit: the rules above, ``low``/``high``/``cmap`` included); ``RGB24`` is shown as
  it is; bytes that Pillow decodes (Tango's ``JPEG_RGB`` and ``JPEG_GRAY8``, PNG, ...) are
  re-encoded as they are (RGB or grey, no scaling).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

CMAPS = ("gray", "viridis")

# Viridis (Smith and van der Walt, 2015; CC0), as its 9 published evenly spaced colours
# (#440154 ... #fde725); the 256-entry table interpolates linearly between them.
_VIRIDIS_ANCHORS = np.array([
    (0x44, 0x01, 0x54), (0x47, 0x2C, 0x7A), (0x3B, 0x51, 0x8B), (0x2C, 0x71, 0x8E),
    (0x21, 0x90, 0x8D), (0x27, 0xAD, 0x81), (0x5C, 0xC8, 0x63), (0xAA, 0xDC, 0x32),
    (0xFD, 0xE7, 0x25),
], dtype=np.float64)


def _viridis_table() -> np.ndarray:
    where = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    levels = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(levels, where, _VIRIDIS_ANCHORS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=1)).astype(np.uint8)


# (256, 3) uint8: VIRIDIS[0] = (68, 1, 84), VIRIDIS[255] = (253, 231, 37)
VIRIDIS = _viridis_table()


class NotAnImage(ValueError):
    """The value cannot be shown as a picture (a string image, undecodable encoded bytes)."""


def jpeg_data_url(data: Any, width: int, height: int, quality: int = 90) -> str:
    pixels = np.asarray(data, dtype=np.float64).reshape(height, width)
    finite = np.isfinite(pixels)
    pixels = np.where(finite, pixels, 0.0)
    low, high = (pixels[finite].min(), pixels[finite].max()) if finite.any() else (0.0, 0.0)
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = ((pixels - low) * scale).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def levels(data: Any, width: int, height: int, low: float | None = None,
           high: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 0..255 level of every pixel (``uint8``, ``height`` x ``width``) and the mask of the
    finite pixels, by the rules of the module docstring."""
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise NotAnImage(f"an image of {array.dtype.name} values is not numeric")
    if array.size != width * height:
        raise NotAnImage(f"{array.size} pixels do not make a {width}x{height} image")
    array = array.reshape(height, width)
    if array.dtype == np.uint8 and low is None and high is None:
        return array.copy(), np.ones(array.shape, dtype=bool)
    pixels = array.astype(np.float64)
    finite = np.isfinite(pixels)
    if finite.any():
        data_low, data_high = float(pixels[finite].min()), float(pixels[finite].max())
    else:
        data_low = data_high = 0.0
    lo = data_low if low is None else low
    hi = data_high if high is None else high
    if low is not None and high is None:
        hi = max(hi, lo)
    if high is not None and low is None:
        lo = min(lo, hi)
    if lo > hi:
        raise ValueError(f"min {lo} is above max {hi}")
    safe = np.where(finite, pixels, lo)
    if hi > lo:
        scaled = np.rint((safe - lo) * (255.0 / (hi - lo))).clip(0, 255)
    elif low is None and high is None:
        scaled = np.zeros(safe.shape)  # a flat image
    else:
        scaled = np.where(safe >= hi, 255.0, 0.0)  # min == max: a threshold
    return scaled.astype(np.uint8), finite


def colour(level: np.ndarray, finite: np.ndarray, cmap: str = "gray") -> Image.Image:
    """The picture of ``levels``' output: grey or viridis, transparent where not finite."""
    if cmap not in CMAPS:
        raise ValueError(f"unknown colour map {cmap!r}")
    opaque = bool(finite.all())
    if cmap == "gray":
        if opaque:
            return Image.fromarray(level, mode="L")
        alpha = np.where(finite, 255, 0).astype(np.uint8)
        return Image.fromarray(np.stack([level, alpha], axis=-1), mode="LA")
    rgb = VIRIDIS[level]
    if opaque:
        return Image.fromarray(rgb, mode="RGB")
    alpha = np.where(finite, 255, 0).astype(np.uint8)[..., None]
    return Image.fromarray(np.concatenate([rgb, alpha], axis=-1), mode="RGBA")


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def image_png(data: Any, width: int, height: int, *, low: float | None = None,
              high: float | None = None, cmap: str = "gray") -> bytes:
    """A numeric image (row-major ``data``) as PNG bytes, by the rules of the module docstring."""
    level, finite = levels(data, width, height, low, high)
    return png_bytes(colour(level, finite, cmap))


# Tango's raw image encodings (EncodedAttribute.encode_gray8/encode_gray16/encode_rgb24): the
# width and the height as big-endian 16-bit numbers, then the pixels row by row, GRAY16's
# big-endian. Checked on PyTango 10 against its own decode_gray8/decode_gray16/decode_rgb32.
_RAW_PIXELS: dict[str, tuple[np.dtype[Any], int]] = {  # format: (pixel type, channels)
    "GRAY8": (np.dtype(np.uint8), 1), "GRAY16": (np.dtype(">u2"), 1),
    "RGB24": (np.dtype(np.uint8), 3),
}


def tango_raw_image(fmt: str, data: bytes) -> np.ndarray | None:
    """The pixels of a raw ``GRAY8``/``GRAY16`` (height x width) or ``RGB24`` image
    (height x width x 3) in native byte order; None for any other format."""
    if fmt not in _RAW_PIXELS:
        return None
    dtype, channels = _RAW_PIXELS[fmt]
    if len(data) < 4:
        raise NotAnImage(f"{fmt} data of {len(data)} bytes has no width and height")
    width, height = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
    expected = 4 + width * height * channels * dtype.itemsize
    if len(data) != expected:
        raise NotAnImage(f"{fmt} data of {len(data)} bytes is not a {width}x{height} image "
                         f"({expected} bytes)")
    pixels = np.frombuffer(data, dtype=dtype, offset=4).astype(dtype.newbyteorder("="))
    return pixels.reshape((height, width, 3) if channels == 3 else (height, width))


def encoded_png(fmt: str, data: bytes, *, low: float | None = None, high: float | None = None,
                cmap: str = "gray") -> bytes:
    """A DevEncoded image (``fmt`` is Tango's format string) as PNG bytes, by the rules of the
    module docstring."""
    raw = tango_raw_image(fmt, data)
    if raw is not None and raw.ndim == 3:
        return png_bytes(Image.fromarray(raw, mode="RGB"))
    if raw is not None:
        height, width = raw.shape
        return image_png(raw, width, height, low=low, high=high, cmap=cmap)
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            converted = picture if picture.mode in ("L", "LA", "RGB", "RGBA") else \
                picture.convert("RGBA" if "A" in picture.getbands() else "RGB")
            return png_bytes(converted)
    except UnidentifiedImageError:
        raise NotAnImage(f"DevEncoded data of format {fmt!r} is not an image that can be "
                         "decoded") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"DevEncoded data of format {fmt!r} is not an image that can be "
                         f"decoded ({exc})") from None
