"""PNG images served by the stand-in's `/render`: panel pictures and Grafana's placeholders.

Real renders are RGB, 8 bits per channel, with only IHDR, IDAT and IEND chunks; so are these.
A panel render (`chart_png`) looks like a small Grafana panel: its title top left, the time
range top right, and a line chart in the bottom band, all on one flat colour,
`panel_color(uid, panel_id)`. At least the middle 30% x 30% of every picture is left in
exactly that colour, so a test can find every panel's pixels again in a PDF built from
them. `solid_png` is the same colour without the drawing, for benchmarks. Placeholders
("renderer not installed", "too many renders") have a fixed size that ignores the request,
like Grafana's `public/img/rendering_*.png`, and are drawn in greys that no panel colour
comes close to.
"""

from __future__ import annotations

import colorsys
import datetime as dt
import hashlib
import io
import math
import random
import re
import struct
import zlib
import zoneinfo
from dataclasses import dataclass
from typing import Final, Literal

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
PlaceholderKind = Literal["not_installed", "limit"]
Theme = Literal["light", "dark"]

PLACEHOLDER_SIZE: Final = (1154, 412)
"""Width and height of every placeholder image, whatever size the request asked for."""

SOLID_FRACTION: Final = 0.3
"""Width and height, as fractions of the picture, of the centred box left in the flat colour."""

_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_GOLDEN: Final = 0.6180339887498949
# Three saturation and three value steps: neighbouring panel ids differ in hue by the golden
# ratio and in saturation/brightness too. Saturation >= 0.6 keeps every colour far from white
# and grey; value >= 0.5 keeps it far from black.
_SATURATIONS: Final = (0.85, 0.6, 0.72)
_VALUES: Final = (0.82, 0.66, 0.5)
_DARK_BACKGROUND: Final = (24, 27, 31)
_LIGHT_BACKGROUND: Final = (247, 248, 250)

# Sizes in CSS pixels, multiplied by the render's scale (Grafana's panel header is ~14 px).
_PADDING_CSS: Final = 8
_TITLE_CSS: Final = 14
_SMALLEST_TEXT_PX: Final = 7  # below this FreeType's glyphs are smudges: leave text out
_CHART_TOP: Final = 0.7  # the chart fills the band below 70% of the height
_SUPERSAMPLE: Final = 2  # Pillow's lines are not antialiased: draw big, then shrink
_POINTS: Final = 48
_SERIES: Final = 3


@dataclass(frozen=True, slots=True)
class _Scheme:
    """Colours of what is drawn over the panel colour; plates carry alpha so it shows through."""

    plate: RGBA
    ink: RGBA
    muted: RGBA
    grid: RGBA
    series: tuple[RGB, ...]


# The panel colours run from dark blue to bright yellow, and no single text colour reads on
# all of them; text and chart sit on translucent plates in the theme's background instead,
# which keeps Grafana's own contrast: light ink on dark plates, dark ink on light ones.
_SCHEMES: Final[dict[Theme, _Scheme]] = {
    "dark": _Scheme(
        plate=(17, 18, 23, 184),
        ink=(230, 230, 240, 255),
        muted=(204, 204, 220, 215),
        grid=(204, 204, 220, 52),
        series=((115, 191, 105), (242, 204, 12), (87, 148, 242), (255, 152, 48), (184, 119, 217)),
    ),
    "light": _Scheme(
        plate=(255, 255, 255, 200),
        ink=(36, 41, 46, 255),
        muted=(36, 41, 46, 210),
        grid=(36, 41, 46, 44),
        series=((55, 135, 45), (224, 47, 68), (31, 96, 196), (250, 100, 0), (143, 59, 184)),
    ),
}


@dataclass(frozen=True, slots=True)
class PanelPicture:
    """Everything a chart-style panel render shows; equal pictures encode to equal bytes.

    Attributes:
        uid, panel_id: the dashboard and panel; they pick the colour and the chart's lines.
        width, height: the image size in pixels (CSS size times scale).
        scale: the device scale factor; text, padding and lines grow with it.
        title: the title as Grafana shows it (variables replaced); "" draws none.
        time_from, time_to: the render's `from` and `to` (epoch ms, or relative like `now-6h`).
        tz: the render's `tz`, an IANA name; epoch times are shown in it (UTC when unknown).
        theme: `dark` draws light text on dark plates, `light` the reverse.
    """

    uid: str
    panel_id: str
    width: int
    height: int
    scale: float = 1.0
    title: str = ""
    time_from: str = ""
    time_to: str = ""
    tz: str = ""
    theme: Theme = "light"


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


def solid_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred (left, top, right, bottom) box, right/bottom exclusive, never drawn on.

    It covers at least the middle 30% x 30% of a `width` x `height` picture.
    """
    margin = (1 - SOLID_FRACTION) / 2
    return (
        math.floor(width * margin),
        math.floor(height * margin),
        math.ceil(width * (1 - margin)),
        math.ceil(height * (1 - margin)),
    )


def solid_png(width: int, height: int, color: RGB) -> bytes:
    """Encode a `width` x `height` RGB PNG of one colour."""
    row = b"\x00" + bytes(color) * width
    return _encode(width, height, row * height)


def chart_png(picture: PanelPicture) -> bytes:
    """Draw and encode `picture`: CPU-bound (up to ~0.5 s at 4000 px), so call it in a thread.

    The background is `panel_color(uid, panel_id)`; the title (top left) and the time range
    (top right) stay above `solid_box`, the chart below it, and whatever does not fit at a
    small size is left out rather than drawn over that box.
    """
    background = panel_color(picture.uid, picture.panel_id)
    image = Image.new("RGB", (picture.width, picture.height), background)
    scheme = _SCHEMES[picture.theme]
    padding = max(
        1, min(round(_PADDING_CSS * picture.scale), picture.width // 24, picture.height // 24)
    )
    _draw_header(image, picture, scheme, padding)
    _draw_chart(image, picture, scheme, padding)
    # Glyphs of some scripts reach past their measured box: paint the centre last, so the
    # tests' promise (a solid centre in the panel's colour) holds whatever the title.
    ImageDraw.Draw(image).rectangle(solid_box(picture.width, picture.height), fill=background)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return _critical_chunks_only(buffer.getvalue())


def time_range_text(time_from: str, time_to: str, tz: str) -> str:
    """How a panel shows its time range: epoch ms as local `YYYY-MM-DD HH:MM` in `tz`.

    The end's date is left out when it is the start's; relative times (`now-6h`) are shown
    as sent; "" when the request had neither.
    """
    if not time_from and not time_to:
        return ""
    zone = _zone(tz)
    start, end = _moment(time_from or "now-6h", zone), _moment(time_to or "now", zone)
    start_text = start.strftime("%Y-%m-%d %H:%M") if isinstance(start, dt.datetime) else start
    if isinstance(end, dt.datetime):
        same_day = isinstance(start, dt.datetime) and start.date() == end.date()
        end_text = end.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
    else:
        end_text = end
    return f"{start_text} to {end_text}"


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


# --- drawing ------------------------------------------------------------------------------


def _draw_header(image: Image.Image, picture: PanelPicture, scheme: _Scheme, padding: int) -> None:
    """The title on a plate at the top left, the time range on one at the top right."""
    space = solid_box(picture.width, picture.height)[1] - padding  # rows above the box
    width = picture.width - 2 * padding
    for size in range(round(_TITLE_CSS * picture.scale), _SMALLEST_TEXT_PX - 1, -1):
        title_font = _font(size)
        if title_font is None:
            return
        ascent, descent = title_font.getmetrics()
        plate_height = ascent + descent + 2 * round(size * 0.3)
        if plate_height <= space:
            break
    else:
        return
    inset = round(size * 0.45)
    radius = max(1, round(size * 0.25))
    middle = padding + plate_height / 2
    draw = ImageDraw.Draw(image, "RGBA")
    time_width = 0
    time_text = time_range_text(picture.time_from, picture.time_to, picture.tz)
    time_font = _font(max(_SMALLEST_TEXT_PX, round(size * 0.8)))
    if time_text and time_font is not None:
        time_width = round(time_font.getlength(time_text)) + 2 * inset
        # The title comes first: the time range only goes where a readable title still fits.
        if time_width + inset + title_font.getlength("Panel 00") + 2 * inset > width:
            time_width = 0
        else:
            right = picture.width - padding - 1
            draw.rounded_rectangle(
                (right - time_width + 1, padding, right, padding + plate_height - 1),
                radius=radius,
                fill=scheme.plate,
            )
            draw.text(
                (right - inset, middle), time_text, fill=scheme.muted, font=time_font, anchor="rm"
            )
    room = width - 2 * inset - (time_width + inset if time_width else 0)
    title = _fit(picture.title, title_font, room)
    if not title:
        return
    title_width = round(title_font.getlength(title)) + 2 * inset
    draw.rounded_rectangle(
        (padding, padding, padding + title_width - 1, padding + plate_height - 1),
        radius=radius,
        fill=scheme.plate,
    )
    draw.text((padding + inset, middle), title, fill=scheme.ink, font=title_font, anchor="lm")


def _font(size: int) -> ImageFont.FreeTypeFont | None:
    """Pillow's own font at `size` px; None if Pillow was built without FreeType.

    A new font per picture: pictures are drawn in worker threads, and FreeType faces must
    not be shared between threads.
    """
    font = ImageFont.load_default(size=size)
    return font if isinstance(font, ImageFont.FreeTypeFont) else None


def _fit(text: str, font: ImageFont.FreeTypeFont, room: float) -> str:
    """`text`, cut and ended with an ellipsis if it is wider than `room` pixels."""
    if font.getlength(text) <= room:
        return text
    for end in range(len(text) - 1, 0, -1):
        cut = text[:end].rstrip() + "\N{HORIZONTAL ELLIPSIS}"
        if font.getlength(cut) <= room:
            return cut
    return ""


def _draw_chart(image: Image.Image, picture: PanelPicture, scheme: _Scheme, padding: int) -> None:
    """A line chart with a light grid on a plate filling the band below `solid_box`."""
    scale = picture.scale
    top = max(solid_box(picture.width, picture.height)[3], round(picture.height * _CHART_TOP))
    left, right, bottom = padding, picture.width - padding, picture.height - padding
    if bottom - top < 12 or right - left < 24:  # noqa: PLR2004 - too small to read as a chart
        return
    ImageDraw.Draw(image, "RGBA").rounded_rectangle(
        (left, top, right - 1, bottom - 1),
        radius=max(1, round(3 * scale)),
        fill=scheme.plate,
    )
    inset = min(max(2, round(6 * scale)), (bottom - top) // 4, (right - left) // 4)
    box = (left + inset, top + inset, right - inset, bottom - inset)
    size = (box[2] - box[0]) * _SUPERSAMPLE, (box[3] - box[1]) * _SUPERSAMPLE
    canvas = image.crop(box).resize(size, Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas, "RGBA")
    grid_width = _SUPERSAMPLE * max(1, round(scale))
    for row in range(4):
        y = round(row * (size[1] - grid_width) / 3)
        draw.rectangle((0, y, size[0] - 1, y + grid_width - 1), fill=scheme.grid)
    for column in range(1, 6):
        x = round(column * size[0] / 6)
        draw.rectangle((x, 0, x + grid_width - 1, size[1] - 1), fill=scheme.grid)
    rng = random.Random(_hash_unit(f"{picture.uid}\x00{picture.panel_id}", 1 << 62))  # noqa: S311 - not crypto
    colours = rng.sample(scheme.series, _SERIES)
    series = _series(rng)
    low = min(min(values) for values in series)
    span = (max(max(values) for values in series) - low) or 1.0
    line_width = _SUPERSAMPLE * max(1, round(1.5 * scale))
    for index, (values, colour) in enumerate(zip(series, colours, strict=True)):
        points = [
            (
                i * (size[0] - 1) / (_POINTS - 1),
                size[1] * (0.92 - 0.84 * (value - low) / span),
            )
            for i, value in enumerate(values)
        ]
        if index == 0:  # an area under one series, as a time series panel with fill opacity
            draw.polygon(
                [*points, (size[0] - 1, size[1] - 1), (0, size[1] - 1)], fill=(*colour, 40)
            )
        draw.line(points, fill=colour, width=line_width, joint="curve")
    image.paste(canvas.reduce(_SUPERSAMPLE), box[:2])


def _series(rng: random.Random) -> list[list[float]]:
    """`_SERIES` smooth, wandering lines of `_POINTS` values: a few waves plus a random walk."""
    series = []
    for _ in range(_SERIES):
        level = rng.uniform(0.2, 0.8)
        waves = [
            (rng.uniform(0.04, 0.2), rng.uniform(0.5, 3.0), rng.uniform(0.0, math.tau))
            for _ in range(3)
        ]
        walk, values = 0.0, []
        for step in range(_POINTS):
            at = step / (_POINTS - 1)
            walk += rng.uniform(-0.03, 0.03)
            wave = sum(
                amplitude * math.sin(math.tau * cycles * at + phase)
                for amplitude, cycles, phase in waves
            )
            values.append(level + walk + wave)
        series.append(values)
    return series


def _zone(tz: str) -> dt.tzinfo:
    """The IANA zone `tz`, or UTC for "", `browser` and names the system does not know."""
    try:
        return zoneinfo.ZoneInfo(tz) if tz else dt.UTC
    # OSError: `tz` is a query parameter, and `Europe` names a directory of the zone database.
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return dt.UTC


def _moment(value: str, zone: dt.tzinfo) -> dt.datetime | str:
    """Epoch milliseconds as a time in `zone`; anything else (`now-6h`) unchanged."""
    if not re.fullmatch(r"-?[0-9]{1,15}", value):
        return value
    try:
        return dt.datetime.fromtimestamp(int(value) / 1000, zone)
    except (OverflowError, OSError, ValueError):
        return value


# --- encoding -----------------------------------------------------------------------------


def _critical_chunks_only(png: bytes) -> bytes:
    """Pillow's PNG as a renderer writes it: IHDR, one IDAT (Pillow splits it), IEND.

    Pillow adds no ancillary chunks unless asked, but dropping any keeps that a guarantee;
    the IDAT payloads are one zlib stream cut in pieces, so joining them is lossless.
    """
    offset, header, data = len(_SIGNATURE), b"", []
    while offset < len(png):
        (length,) = struct.unpack_from(">I", png, offset)
        kind, body = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data.append(body)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(data))
        + _chunk(b"IEND", b"")
    )


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
