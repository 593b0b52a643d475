"""PNG images served by the stand-in's `/render`: solid panel images and Grafana's placeholders.

Real renders are RGB, 8 bits per channel, with only IHDR, IDAT and IEND chunks; so are these.
Each panel image is one flat colour, `panel_color(uid, panel_id)`, so a test can find every
panel's pixels again in a PDF built from them. Placeholders ("renderer not installed",
"too many renders") have a fixed size that ignores the request, like Grafana's
`public/img/rendering_*.png`, and are drawn in greys that no panel colour comes close to.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
import struct
import zlib
from typing import Final, Literal

RGB = tuple[int, int, int]
PlaceholderKind = Literal["not_installed", "limit"]

PLACEHOLDER_SIZE: Final = (1154, 412)
"""Width and height of every placeholder image, whatever size the request asked for."""

_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_GOLDEN: Final = 0.6180339887498949
# Three saturation and three value steps: neighbouring panel ids differ in hue by the golden
# ratio and in saturation/brightness too. Saturation >= 0.6 keeps every colour far from white
# and grey; value >= 0.5 keeps it far from black.
_SATURATIONS: Final = (0.85, 0.6, 0.72)
_VALUES: Final = (0.82, 0.66, 0.5)
_DARK_BACKGROUND: Final = (24, 27, 31)
_LIGHT_BACKGROUND: Final = (247, 248, 250)


def panel_color(uid: str, panel_id: int | str) -> RGB:
    """Return the flat colour of the render of panel `panel_id` of dashboard `uid`.

    Deterministic; `4` and `"4"` give the same colour. Numeric ids that are close together
    get far-apart hues; other ids (scenes keys such as `panel-4-clone-1`, or `""` for a whole
    dashboard) are hashed. Never white, near-white, grey or near-black.
    """
    key = str(panel_id)
    number = int(key) if re.fullmatch(r"[0-9]{1,12}", key) else _hash_unit(key, 1 << 20)
    hue = (_hash_unit(uid, 1 << 16) / (1 << 16) + number * _GOLDEN) % 1.0
    saturation = _SATURATIONS[number % 3]
    value = _VALUES[(number // 3) % 3]
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def solid_png(width: int, height: int, color: RGB) -> bytes:
    """Encode a `width` x `height` RGB PNG of one colour."""
    row = b"\x00" + bytes(color) * width
    return _encode(width, height, row * height)


def placeholder_png(kind: PlaceholderKind, theme: str = "dark") -> bytes:
    """Encode the placeholder Grafana answers with instead of a render, at PLACEHOLDER_SIZE.

    `not_installed` (no renderer) is dark; `limit` (too many renders in progress) follows
    the theme like `rendering_limit_<theme>.png`. A band across the middle stands for the
    text of the real images.
    """
    if kind == "not_installed":
        background, band = _DARK_BACKGROUND, (200, 200, 204)
    elif theme == "light":
        background, band = _LIGHT_BACKGROUND, (70, 70, 74)
    else:
        background, band = _DARK_BACKGROUND, (140, 140, 146)
    width, height = PLACEHOLDER_SIZE
    plain = b"\x00" + bytes(background) * width
    margin = width // 5
    text = b"\x00" + bytes(background) * margin + bytes(band) * (width - 2 * margin)
    text += bytes(background) * margin
    band_rows = height // 8
    top = (height - band_rows) // 2
    raw = plain * top + text * band_rows + plain * (height - top - band_rows)
    return _encode(width, height, raw)


def _encode(width: int, height: int, raw: bytes) -> bytes:
    """Wrap filtered scanlines `raw` into a PNG: IHDR (8-bit RGB), one IDAT, IEND."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    """Frame one PNG chunk: length, type, data, CRC over type and data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _hash_unit(text: str, modulus: int) -> int:
    """Map `text` to a stable integer in [0, modulus)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulus
