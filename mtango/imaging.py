"""Images as embeddable JPEG data URLs (rc3's ``value/plain`` for image attributes).

The numbers are scaled linearly from their own minimum..maximum to 0..255 grey levels, so any
numeric image type gives a visible picture; the exact values stay available from ``value``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


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
