"""Tests of `sidecar.pdf`: PDFs are read back with pypdf (strict) and rendered with PDFium."""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import logging
import re
import struct
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.t2CharStringPen import T2CharStringPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont
from fontTools.ttLib.ttCollection import TTCollection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms
from pypdf import PdfReader
from pypdf.generic import ContentStream, DictionaryObject, StreamObject

import sidecar
from sidecar import pdf
from sidecar.model import GridPos, Layout, Orientation
from sidecar.pdf import (
    DashboardPdf,
    InvalidFont,
    InvalidImage,
    PanelImage,
    PdfFont,
    PdfFonts,
    PdfReport,
    Rect,
    SectionTitle,
    build_pdf,
    content_box,
    plan_pages,
)

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
RENDERS = FIXTURES / "renders"
# pypdf refuses to inflate more than 75 MB, and this render is 235 MB of pixels.
HUGE_RENDER = "render-very-long-prometheus-dashboard.png"
COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
    (0, 0, 128),
]

# ---------------------------------------------------------------------------------------
# Helpers


def solid_png(
    colour: tuple[int, ...], size: tuple[int, int] = (120, 60), mode: str = "RGB"
) -> bytes:
    """A one-colour PNG saved by Pillow."""
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def noise_pixels(width: int, height: int, channels: int, seed: int) -> list[bytes]:
    """Deterministic busy pixel rows (a cheap LCG), so that every PNG filter matters."""
    state = seed
    rows = []
    for _ in range(height):
        row = bytearray()
        for _ in range(width * channels):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            row.append((state >> 16) & 0xFF)
        rows.append(bytes(row))
    return rows


def paeth(left: int, up: int, up_left: int) -> int:
    """The PNG Paeth predictor."""
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    if distances[0] <= distances[1] and distances[0] <= distances[2]:
        return left
    return up if distances[1] <= distances[2] else up_left


def filter_row(kind: int, row: bytes, previous: bytes, bpp: int) -> bytes:
    """One scanline filtered with PNG filter `kind` (0-4)."""
    out = bytearray([kind])
    for i, value in enumerate(row):
        left = row[i - bpp] if i >= bpp else 0
        up = previous[i]
        up_left = previous[i - bpp] if i >= bpp else 0
        predictor = (0, left, up, (left + up) // 2, paeth(left, up, up_left))[kind]
        out.append((value - predictor) & 0xFF)
    return bytes(out)


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(
    rows: Sequence[bytes],
    width: int,
    colour_type: int,
    *,
    bit_depth: int = 8,
    filters: Sequence[int] = (0, 1, 2, 3, 4),
    idat_size: int = 8192,
    interlaced: bool = False,
) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB, Adam7, chosen filters).

    Rows are raw samples (big-endian for 16 bits); filters cycle over the scanlines.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    bpp = channels * bit_depth // 8
    height = len(rows)
    # Adam7: (x0, y0, dx, dy) of the seven passes; one pass over everything otherwise.
    adam7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes = [*adam7, (0, 1, 1, 2)] if interlaced else [(0, 0, 1, 1)]
    raw = bytearray()
    count = 0
    for x0, y0, dx, dy in passes:
        columns = range(x0, width, dx)
        if not columns:
            continue
        previous = bytes(len(columns) * bpp)
        for y in range(y0, height, dy):
            row = b"".join(rows[y][x * bpp : (x + 1) * bpp] for x in columns)
            raw += filter_row(filters[count % len(filters)], row, previous, bpp)
            previous = row
            count += 1
    data = zlib.compress(bytes(raw))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlaced))
    idat = b"".join(chunk(b"IDAT", data[i : i + idat_size]) for i in range(0, len(data), idat_size))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def report_of(
    items: Sequence[PanelImage | SectionTitle],
    *,
    layout: Layout = "grid",
    orientation: Orientation = "landscape",
    **fields: Any,
) -> PdfReport:
    """A one-dashboard report around `items`."""
    dashboard = DashboardPdf(
        fields.pop("title", "Node overview"),
        fields.pop("time_range", "2026-11-19 10:00:00 to 2026-11-26 10:00:00"),
        items,
        variables=fields.pop("variables", ""),
    )
    return PdfReport(
        fields.pop("name", "Weekly ops"),
        [dashboard],
        generated=fields.pop("generated", "2026-11-26 10:00 UTC"),
        layout=layout,
        orientation=orientation,
        **fields,
    )


def read(data: bytes) -> PdfReader:
    """The PDF opened by pypdf in strict mode."""
    return PdfReader(io.BytesIO(data), strict=True)


def xobject(reader: PdfReader, page: int = 0, name: str = "/Im0") -> StreamObject:
    """An image XObject of a page."""
    found = entry(entry(entry(reader.pages[page], "/Resources"), "/XObject"), name)
    assert isinstance(found, StreamObject)
    return found


def entry(obj: object, key: str) -> Any:
    """`obj[key]` of a pypdf dictionary, resolved (pypdf types values loosely)."""
    assert isinstance(obj, DictionaryObject)
    return obj[key]


def rendered_pages(data: bytes, scale: float = 1.0) -> Iterator[Image.Image]:
    """Every page rendered by PDFium (Chrome's PDF engine) as an RGB image."""
    document = pdfium.PdfDocument(data)
    try:
        for index in range(len(document)):
            page = document[index]
            bitmap = page.render(scale=scale)
            yield bitmap.to_pil().convert("RGB")
            bitmap.close()
            page.close()
    finally:
        document.close()


def centre_pixel(image: Image.Image, rect: Rect, page_height: float, scale: float) -> Any:
    """The rendered pixel at the centre of `rect` (PDF points, origin bottom left)."""
    x = (rect.x + rect.width / 2) * scale
    y = (page_height - rect.y - rect.height / 2) * scale
    return image.getpixel((int(x), int(y)))


def close(actual: Sequence[int], expected: Sequence[int], tolerance: int = 3) -> bool:
    """Colours equal within `tolerance` per channel."""
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


def drawn_strings(reader: PdfReader, page: int = 0) -> list[tuple[str, float, bytes]]:
    """(font resource, size, raw bytes) of every string a page shows with Tj."""
    contents = reader.pages[page].get_contents()
    assert isinstance(contents, ContentStream)
    font, size = "", 0.0
    shown = []
    for operands, operator in contents.operations:
        if operator == b"Tf":
            font, size = str(operands[0]), float(operands[1])
        elif operator == b"Tj":
            value = operands[0]
            raw = value.get_original_bytes() if hasattr(value, "get_original_bytes") else value
            shown.append((font, size, bytes(raw)))
    return shown


def overlap(a: Rect, b: Rect) -> float:
    """The area two rectangles share."""
    width = min(a.right, b.right) - max(a.x, b.x)
    height = min(a.top, b.top) - max(a.y, b.y)
    return max(width, 0.0) * max(height, 0.0)


def inside(rect: Rect, box: Rect, epsilon: float = 1e-6) -> bool:
    """Whether `rect` lies within `box`."""
    return (
        rect.x >= box.x - epsilon
        and rect.y >= box.y - epsilon
        and rect.right <= box.right + epsilon
        and rect.top <= box.top + epsilon
    )


TINY = solid_png((10, 20, 30), (8, 4))

# ---------------------------------------------------------------------------------------
# Document structure and text


@pytest.mark.parametrize(
    ("orientation", "size"), [("landscape", (842, 595)), ("portrait", (595, 842))]
)
def test_pages_are_a4_in_the_orientation(orientation: Orientation, size: tuple[int, int]) -> None:
    """Every page is A4, turned as the report says, and the page count follows the plan."""
    items = [PanelImage(TINY, GridPos(0, i * 8, 24, 8), f"p{i}") for i in range(9)]
    report = report_of(items, orientation=orientation)
    reader = read(build_pdf(report))
    assert len(reader.pages) == len(plan_pages(report)) > 1
    for page in reader.pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == size


def test_header_and_footer_text() -> None:
    """Report name, date, dashboard title, time range, variables and `Page n/N` are text."""
    items = [PanelImage(TINY, GridPos(0, i * 8, 24, 8), f"p{i}") for i in range(5)]
    report = report_of(items, variables="host = web-1, web-2")
    reader = read(build_pdf(report))
    total = len(reader.pages)
    assert total == 3
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        for expected in (
            "Weekly ops",
            "2026-11-26 10:00 UTC",
            "Node overview",
            "2026-11-19 10:00:00 to 2026-11-26 10:00:00",
            "host = web-1, web-2",
            f"Page {number}/{total}",
        ):
            assert expected in text


def test_without_header_only_the_footer_is_drawn() -> None:
    """`show_header=False` leaves the header out and gives its room to the panels."""
    items = [PanelImage(TINY, GridPos(0, 0, 24, 8), "p")]
    with_header = report_of(items)
    without = report_of(items, show_header=False)
    text = read(build_pdf(without)).pages[0].extract_text()
    assert "Weekly ops" not in text
    assert "Node overview" not in text
    assert "Page 1/1" in text
    assert content_box(without, 0).height > content_box(with_header, 0).height


def test_metadata() -> None:
    """Title, Producer (with the version), Creator and CreationDate are set."""
    created = datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC)
    report = report_of(
        [PanelImage(TINY, GridPos(0, 0, 6, 4))], name="Ops ✓ report", created=created
    )
    reader = read(build_pdf(report))
    info = reader.metadata
    assert info is not None
    assert info.title == "Ops ✓ report"
    assert info.producer == f"grafana-reporting-sidecar {sidecar.__version__}"
    assert info.creator == "grafana-reporting-sidecar"
    assert info.creation_date == created


def test_output_reads_without_pypdf_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """The strict reader reads every page, text and image without logging a complaint."""
    items: list[PanelImage | SectionTitle] = [SectionTitle("Row", 0)]
    items += [PanelImage(solid_png(c), GridPos(0, 1 + i * 6, 12, 6)) for i, c in enumerate(COLOURS)]
    report = report_of(items, logo_png=solid_png((0, 0, 0, 128), mode="RGBA"))
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        reader = read(build_pdf(report))
        for page in reader.pages:
            page.extract_text()
            for image in page.images:
                assert image.image is not None
    assert not caplog.records


def test_each_dashboard_starts_on_a_new_page() -> None:
    """A second dashboard begins a page of its own, with its own title in the header."""
    first = DashboardPdf("First", "r1", [PanelImage(TINY, GridPos(0, 0, 12, 4))])
    second = DashboardPdf("Second", "r2", [PanelImage(TINY, GridPos(0, 0, 12, 4))])
    report = PdfReport("Two", [first, second], generated="now")
    pages = plan_pages(report)
    assert [[p.dashboard for p in page] for page in pages] == [[0], [1]]
    reader = read(build_pdf(report))
    assert "First" in reader.pages[0].extract_text()
    assert "Second" in reader.pages[1].extract_text()
    assert "Page 2/2" in reader.pages[1].extract_text()


def test_an_empty_dashboard_still_gets_its_page() -> None:
    """A dashboard without panels is one page with its header and a note."""
    report = report_of([])
    assert plan_pages(report) == [[]]
    text = read(build_pdf(report)).pages[0].extract_text()
    assert "Node overview" in text
    assert "no panels" in text


def test_a_report_without_dashboards_is_refused() -> None:
    """There is nothing to lay out without a dashboard."""
    with pytest.raises(ValueError, match="at least one dashboard"):
        build_pdf(PdfReport("Empty", [], generated="now"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ASCII", b"plain ASCII"),
        ("Café €5 \u2013 \u201cok\u201d", b"Caf\xe9 \x805 \x96 \x93ok\x94"),
        ("a\nb\tc\r", b"a b c "),
        ("zero\u200bwidth", b"zerowidth"),
        ("Łódź ő", "?ódz o".encode("cp1252")),
        ("ﬁle", b"file"),
        ("中文 ✓", b"?? ?"),
        ("lone \ud800 surrogate", b"lone ? surrogate"),
        ("(paren) \\ back", b"(paren) \\ back"),
    ],
)
def test_text_becomes_windows_1252(text: str, expected: bytes) -> None:
    """Characters outside Windows-1252 are approximated or replaced, never fatal."""
    assert pdf._winansi(text) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(max_size=60), title=st.text(max_size=60), section=st.text(max_size=30))
def test_any_text_is_escaped_and_drawn(name: str, title: str, section: str) -> None:
    """Arbitrary titles never break the PDF: every string parses back to what was meant.

    Parentheses and backslashes must be escaped in PDF string syntax, or the content stream
    would end the string early; the strict reader would then fail or show other bytes.
    """
    items: list[PanelImage | SectionTitle] = [
        SectionTitle(section, 0),
        PanelImage(TINY, GridPos(0, 1, 12, 4), title),
    ]
    report = report_of(items, name=name, title=title)
    reader = read(build_pdf(report))
    shown = drawn_strings(reader)
    ellipsis = b"\x85"

    def matches(raw: bytes, text: str) -> bool:
        """`raw` is the text's WinAnsi bytes, or a prefix of them ending in an ellipsis."""
        full = pdf._winansi(text)
        if raw == full:
            return True
        return raw.endswith(ellipsis) and full.startswith(raw[:-1])

    by_style = {(font, size): raw for font, size, raw in shown}
    for expected, key in ((name, ("/F2", 12.0)), (title, ("/F2", 10.0))):
        if pdf._winansi(expected):
            assert matches(by_style[key], expected)
    if pdf._winansi(section):
        assert any(font == "/F2" and matches(raw, section) for font, _, raw in shown)
    for _, _, raw in shown:
        assert not any(byte < 32 for byte in raw)


def test_printable_titles_come_back_as_text() -> None:
    """Text with PDF syntax characters is extracted unchanged."""
    name = r"Report (daily) \ 100% <ok> [x] {y} /z"
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], name=name, title="Über (ß)")
    text = read(build_pdf(report)).pages[0].extract_text()
    assert name in text
    assert "Über (ß)" in text


def test_long_titles_are_cut_to_the_page() -> None:
    """A title wider than the page ends with an ellipsis and stays inside the margins."""
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], title="W" * 300)
    reader = read(build_pdf(report))
    (raw,) = [raw for font, size, raw in drawn_strings(reader) if (font, size) == ("/F2", 10.0)]
    assert raw.endswith(b"\x85")
    assert pdf._text_width(raw, pdf._TITLE_STYLE) <= 842 - 2 * pdf.MARGIN


# ---------------------------------------------------------------------------------------
# Images


def embedded_stream(png: bytes) -> StreamObject:
    """The image XObject that a one-panel report makes of `png`."""
    reader = read(build_pdf(report_of([PanelImage(png, GridPos(0, 0, 12, 8))])))
    return xobject(reader)


def idat_of(png: bytes) -> bytes:
    """The concatenated IDAT data of a PNG."""
    position, parts = 8, []
    while position < len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        if kind == b"IDAT":
            parts.append(png[position + 8 : position + 8 + length])
        position += 12 + length
    return b"".join(parts)


@pytest.mark.parametrize("path", sorted(RENDERS.glob("*.png")), ids=lambda p: p.name)
def test_real_renders_are_copied_not_decoded(path: Path) -> None:
    """A real render's IDAT goes into the PDF unchanged, with a PNG predictor."""
    png = path.read_bytes()
    stream = embedded_stream(png)
    with Image.open(path) as image:
        width, height = image.size
    assert stream._data == idat_of(png)
    assert entry(stream, "/Filter") == "/FlateDecode"
    assert entry(stream, "/ColorSpace") == "/DeviceRGB"
    size = (entry(stream, "/Width"), entry(stream, "/Height"), entry(stream, "/BitsPerComponent"))
    assert size == (width, height, 8)
    parameters = entry(stream, "/DecodeParms")
    assert {str(key): value for key, value in parameters.items()} == {
        "/Predictor": 15,
        "/Colors": 3,
        "/BitsPerComponent": 8,
        "/Columns": width,
    }
    assert "/SMask" not in stream


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(RENDERS.glob("*.png")) if p.name != HUGE_RENDER],
    ids=lambda p: p.name,
)
def test_real_renders_decode_bit_exact(path: Path) -> None:
    """The embedded image, decoded by pypdf, equals Pillow's decode of the PNG."""
    stream = embedded_stream(path.read_bytes())
    with Image.open(path) as image:
        assert stream.get_data() == image.convert("RGB").tobytes()


@pytest.mark.parametrize("idat_size", [7, 8192, 1 << 20])
@pytest.mark.parametrize("colour_type", [0, 2])
def test_direct_path_with_every_filter_and_chunking(colour_type: int, idat_size: int) -> None:
    """Grey and RGB PNGs with all five filters and any IDAT split decode exactly."""
    channels = 1 if colour_type == 0 else 3
    rows = noise_pixels(37, 23, channels, seed=colour_type + idat_size)
    png = encode_png(rows, 37, colour_type, idat_size=idat_size)
    stream = embedded_stream(png)
    assert stream._data == idat_of(png)
    assert stream.get_data() == b"".join(rows)
    assert entry(stream, "/ColorSpace") == ("/DeviceGray" if colour_type == 0 else "/DeviceRGB")


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
def test_opaque_rgba_gets_no_soft_mask(filters: tuple[int, ...]) -> None:
    """RGBA with alpha 255 everywhere: alpha is dropped, colours are exact, no /SMask."""
    width = 29
    rgb_rows = noise_pixels(width, 17, 3, seed=sum(filters) + 7)
    rows = [b"".join(row[i : i + 3] + b"\xff" for i in range(0, len(row), 3)) for row in rgb_rows]
    png = encode_png(rows, width, 6, filters=filters)
    with Image.open(io.BytesIO(png)) as image:
        assert image.convert("RGB").tobytes() == b"".join(rgb_rows)  # the encoder is right
    stream = embedded_stream(png)
    assert "/SMask" not in stream
    assert stream.get_data() == b"".join(rgb_rows)


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_transparent_pixel_gets_a_soft_mask(filters: tuple[int, ...], where: str) -> None:
    """A single pixel below 255 anywhere is found without unfiltering, and kept exactly."""
    width, height = 13, 9
    rgb_rows = noise_pixels(width, height, 3, seed=len(where))
    alpha = [bytearray(b"\xff" * width) for _ in range(height)]
    row, column = {"first": (0, 0), "middle": (4, 6), "last": (height - 1, width - 1)}[where]
    alpha[row][column] = 254
    rows = [
        b"".join(rgb[i * 3 : i * 3 + 3] + bytes([a[i]]) for i in range(width))
        for rgb, a in zip(rgb_rows, alpha, strict=True)
    ]
    stream = embedded_stream(encode_png(rows, width, 6, filters=filters))
    assert stream.get_data() == b"".join(rgb_rows)
    mask = entry(stream, "/SMask")
    assert entry(mask, "/ColorSpace") == "/DeviceGray"
    assert mask.get_data() == b"".join(bytes(a) for a in alpha)


def test_transparent_panel_is_composited_on_white() -> None:
    """A fully transparent Pillow RGBA PNG shows the white page, not black."""
    png = solid_png((0, 0, 0, 0), mode="RGBA")
    report = report_of([PanelImage(png, GridPos(0, 0, 24, 8))])
    (placement,) = plan_pages(report)[0]
    (page,) = rendered_pages(build_pdf(report))
    assert close(centre_pixel(page, placement.rect, 595, 1.0), (255, 255, 255))


def sixteen_bit_rgb() -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one) of one colour, (200, 100, 50) in 8 bits."""
    sample = struct.pack(">HHH", 200 * 257, 100 * 257, 50 * 257)
    return encode_png([sample * 40] * 20, 40, 2, bit_depth=16)


def saved(image: Image.Image, **options: Any) -> bytes:
    """`image` saved by Pillow as PNG with `options`."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


FALLBACKS: dict[str, tuple[Callable[[], bytes], tuple[int, int, int]]] = {
    "palette": (
        lambda: saved(Image.new("RGB", (40, 20), (200, 100, 50)).quantize(4)),
        (200, 100, 50),
    ),
    "16-bit RGB": (sixteen_bit_rgb, (200, 100, 50)),
    "16-bit grey": (
        lambda: saved(Image.new("I;16", (40, 20), 150 * 257)),
        (150, 150, 150),
    ),
    "interlaced": (
        lambda: encode_png([bytes((200, 100, 50)) * 40] * 20, 40, 2, interlaced=True),
        (200, 100, 50),
    ),
    "grey + alpha": (lambda: saved(Image.new("LA", (40, 20), (90, 255))), (90, 90, 90)),
    "tRNS": (
        lambda: saved(Image.new("RGB", (40, 20), (200, 100, 50)), transparency=(1, 2, 3)),
        (200, 100, 50),
    ),
    "iCCP": (
        lambda: saved(
            Image.new("RGB", (40, 20), (200, 100, 50)),
            icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
        ),
        (200, 100, 50),
    ),
    "JPEG": (
        lambda: _jpeg(Image.new("RGB", (40, 20), (200, 100, 50))),
        (200, 100, 50),
    ),
}


def _jpeg(image: Image.Image) -> bytes:
    """`image` as a JPEG, which is not a PNG at all."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", list(FALLBACKS))
def test_other_formats_are_decoded_and_still_show(kind: str) -> None:
    """Palette, 16-bit, interlaced, grey+alpha, tRNS, iCCP and JPEG go through Pillow."""
    make, colour = FALLBACKS[kind]
    png = make()
    report = report_of([PanelImage(png, GridPos(0, 0, 24, 8))])
    data = build_pdf(report)
    stream = xobject(read(data))
    assert "/DecodeParms" not in stream  # decoded, not copied through
    (placement,) = plan_pages(report)[0]
    (page,) = rendered_pages(data)
    assert close(centre_pixel(page, placement.rect, 595, 1.0), colour, tolerance=4)


def test_icc_profile_is_kept() -> None:
    """A PNG's RGB ICC profile becomes an /ICCBased colour space."""
    make, _ = FALLBACKS["iCCP"]
    space = entry(embedded_stream(make()), "/ColorSpace")
    assert space[0] == "/ICCBased"
    assert entry(space[1].get_object(), "/N") == 3


def test_interlaced_decodes_exactly() -> None:
    """The Adam7 fallback gives the same pixels as Pillow."""
    rows = noise_pixels(19, 11, 3, seed=3)
    stream = embedded_stream(encode_png(rows, 19, 2, interlaced=True))
    assert stream.get_data() == zlib.decompress(stream._data)
    assert zlib.decompress(stream._data) == b"".join(rows)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_image_names_the_panel(data: bytes) -> None:
    """Bytes that are no image raise InvalidImage naming the panel."""
    report = report_of([PanelImage(data, GridPos(0, 0, 6, 4), "CPU busy")])
    with pytest.raises(InvalidImage, match="CPU busy"):
        build_pdf(report)


def test_a_png_used_twice_is_stored_once() -> None:
    """The same bytes object in two panels becomes one XObject."""
    png = solid_png((1, 2, 3))
    report = report_of(
        [PanelImage(png, GridPos(0, 0, 12, 4)), PanelImage(png, GridPos(12, 0, 12, 4))]
    )
    reader = read(build_pdf(report))
    images = entry(entry(reader.pages[0], "/Resources"), "/XObject")
    assert images.raw_get("/Im0").idnum == images.raw_get("/Im1").idnum


# ---------------------------------------------------------------------------------------
# Placement, checked on rendered pixels


@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
@pytest.mark.parametrize("layout", ["grid", "simple"])
def test_panels_render_where_planned(layout: Layout, orientation: Orientation) -> None:
    """Each solid-colour panel's colour is at the centre of its planned rectangle."""
    positions = [
        GridPos(0, 0, 12, 8),
        GridPos(12, 0, 12, 8),
        GridPos(0, 8, 8, 6),
        GridPos(8, 8, 8, 6),
        GridPos(16, 8, 8, 10),
        GridPos(0, 18, 24, 9),
        GridPos(0, 27, 6, 4),
        GridPos(6, 27, 18, 12),
    ]
    items: list[PanelImage | SectionTitle] = [
        PanelImage(solid_png(COLOURS[i], (300, 150 + 20 * i)), pos, f"p{i}")
        for i, pos in enumerate(positions)
    ]
    report = report_of(items, layout=layout, orientation=orientation, logo_png=solid_png((0, 0, 0)))
    pages = plan_pages(report)
    page_height = 595 if orientation == "landscape" else 842
    scale = 1.5
    rendered = list(rendered_pages(build_pdf(report), scale))
    assert len(rendered) == len(pages)
    seen = set()
    for number, placements in enumerate(pages):
        for placement in placements:
            assert placement.page == number
            pixel = centre_pixel(rendered[number], placement.rect, page_height, scale)
            assert close(pixel, COLOURS[placement.index]), (placement, pixel)
            seen.add(placement.index)
    assert seen == set(range(len(positions)))


@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_simple_layout_puts_one_or_three_panels_on_a_page(orientation: Orientation) -> None:
    """simple: one panel per landscape page, three per portrait page, in reading order."""
    items = [PanelImage(TINY, GridPos(0, 20 - 2 * i, 24, 2), f"p{i}") for i in range(7)]
    pages = plan_pages(report_of(items, layout="simple", orientation=orientation))
    per_page = 1 if orientation == "landscape" else 3
    assert [len(page) for page in pages] == [min(per_page, 7 - i) for i in range(0, 7, per_page)]
    order = [placement.index for page in pages for placement in page]
    assert order == list(range(6, -1, -1))  # sorted by grid y, not by list order


def test_simple_layout_draws_row_headers_above_their_panel() -> None:
    """A row header heads the next panel's slot; one without panels after it is left out."""
    items: list[PanelImage | SectionTitle] = [
        SectionTitle("Alpha row", 0),
        PanelImage(TINY, GridPos(0, 1, 24, 8)),
        SectionTitle("Beta row", 9),
        PanelImage(TINY, GridPos(0, 10, 12, 8)),
        SectionTitle("Gamma row", 18),
    ]
    report = report_of(items, layout="simple", orientation="portrait")
    (page,) = plan_pages(report)
    assert [p.index for p in page] == [0, 1, 2, 3]
    box = content_box(report, 0)
    assert page[0].rect.top == pytest.approx(box.top)
    for title, panel in ((page[0], page[1]), (page[2], page[3])):
        assert panel.rect.top == pytest.approx(title.rect.y)
    text = read(build_pdf(report)).pages[0].extract_text()
    assert "Alpha row" in text
    assert "Beta row" in text
    assert "Gamma row" not in text


def test_grid_keeps_left_and_right() -> None:
    """Two half-width panels side by side stay side by side, each half the width."""
    items = [
        PanelImage(TINY, GridPos(12, 0, 12, 8), "right"),
        PanelImage(TINY, GridPos(0, 0, 12, 8), "left"),
    ]
    report = report_of(items)
    ((first, second),) = plan_pages(report)
    by_title = {p.item.title: p.rect for p in (first, second) if isinstance(p.item, PanelImage)}
    left, right = by_title["left"], by_title["right"]
    box = content_box(report, 0)
    assert left.y == right.y
    assert left.height == right.height
    assert left.width == pytest.approx(right.width)
    assert left.x == pytest.approx(box.x)
    assert right.right == pytest.approx(box.right)
    assert left.right < right.x
    assert left.width == pytest.approx((box.width - right.x + left.right) / 2)


def test_grid_scale_matches_grafana() -> None:
    """A 24x8 panel keeps Grafana's 1200 x 296 px shape across the content width."""
    report = report_of([PanelImage(TINY, GridPos(0, 0, 24, 8))])
    ((placement,),) = plan_pages(report)
    assert placement.rect.width == pytest.approx(content_box(report, 0).width)
    assert placement.rect.width / placement.rect.height == pytest.approx(1200 / 296)


@pytest.mark.parametrize("width_px", [1000, 1200, 1920])
def test_rendered_width_fills_boxes_exactly(width_px: int) -> None:
    """Panels rendered at their grid size in `grid_width_px` fill their boxes exactly.

    The box's width / height is the PNG's, and the gutter between columns is 8 px scaled.
    """
    pitch = (width_px + 8) / 24
    positions = [GridPos(0, 0, 7, 5), GridPos(7, 0, 17, 9), GridPos(3, 9, 2, 3)]
    items = [PanelImage(TINY, pos) for pos in positions]
    report = report_of(items, grid_width_px=width_px)
    (placements,) = plan_pages(report)
    for placement, pos in zip(placements, positions, strict=True):
        png_w, png_h = pos.w * pitch - 8, pos.h * 30 + (pos.h - 1) * 8
        assert placement.rect.width / placement.rect.height == pytest.approx(png_w / png_h)
    scale = content_box(report, 0).width / width_px
    assert placements[1].rect.x - placements[0].rect.right == pytest.approx(8 * scale)


def test_a_band_that_does_not_fit_moves_to_the_next_page() -> None:
    """Panels sharing rows move together; nothing is split; a row header stays with them."""
    items: list[PanelImage | SectionTitle] = [
        PanelImage(TINY, GridPos(0, 0, 24, 11)),
        SectionTitle("Disk", 11),
        PanelImage(TINY, GridPos(0, 12, 12, 8)),
        PanelImage(TINY, GridPos(12, 12, 12, 4)),
        PanelImage(TINY, GridPos(12, 16, 12, 4)),
    ]
    # Landscape content is 469 pt high; the first panel takes 269 pt, the band of three
    # panels 194 pt: the header (20 pt) would fit alone, but not with the band.
    pages = plan_pages(report_of(items))
    assert [[p.index for p in page] for page in pages] == [[0], [1, 2, 3, 4]]
    assert len({round(p.rect.top, 6) for p in pages[1][1:3]}) == 1


def test_a_panel_taller_than_a_page_is_scaled_to_fit() -> None:
    """A very tall panel gets a page of its own, squeezed to the content height."""
    items = [
        PanelImage(TINY, GridPos(0, 0, 24, 4)),
        PanelImage(TINY, GridPos(0, 4, 24, 80)),
        PanelImage(TINY, GridPos(0, 84, 24, 4)),
    ]
    report = report_of(items)
    pages = plan_pages(report)
    assert [[p.index for p in page] for page in pages] == [[0], [1], [2]]
    box = content_box(report, 0)
    assert pages[1][0].rect.height == pytest.approx(box.height)
    assert inside(pages[1][0].rect, box)


def test_overlapping_positions_are_pushed_down() -> None:
    """Two panels at the same grid position are stacked, not drawn over each other."""
    items = [PanelImage(TINY, GridPos(0, 0, 12, 4)), PanelImage(TINY, GridPos(6, 0, 12, 4))]
    ((first, second),) = plan_pages(report_of(items))
    assert overlap(first.rect, second.rect) == 0
    assert second.rect.top < first.rect.y


def expanded_dashboard(path: Path) -> list[PanelImage | SectionTitle]:
    """Panels and rows of a dashboard JSON with collapsed rows expanded, as Grafana would.

    Panels inside a collapsed row keep their order and spacing; whatever follows the row
    moves down by their height.
    """
    model = json.loads(path.read_text())
    items: list[PanelImage | SectionTitle] = []
    shift = 0
    for index, panel in enumerate(model["panels"]):
        pos = panel["gridPos"]
        y = pos["y"] + shift
        png = solid_png(COLOURS[index % len(COLOURS)], (24 * pos["w"], 10 * pos["h"]))
        if panel["type"] != "row":
            items.append(PanelImage(png, GridPos(pos["x"], y, pos["w"], pos["h"]), panel["title"]))
            continue
        items.append(SectionTitle(panel["title"], y))
        nested = panel.get("panels", [])
        if nested:
            top = min(p["gridPos"]["y"] for p in nested)
            for inner in nested:
                grid = inner["gridPos"]
                inner_y = y + 1 + grid["y"] - top
                inner_png = solid_png(
                    COLOURS[len(items) % len(COLOURS)], (24 * grid["w"], 10 * grid["h"])
                )
                items.append(
                    PanelImage(
                        inner_png, GridPos(grid["x"], inner_y, grid["w"], grid["h"]), inner["title"]
                    )
                )
            shift += max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in nested) - top
    return items


@pytest.mark.parametrize("layout", ["grid", "simple"])
def test_node_exporter_full_141_panels(layout: Layout) -> None:
    """The 141 panels and rows of Node Exporter Full make a valid PDF, none split or lost."""
    items = expanded_dashboard(FIXTURES / "dashboards" / "node-exporter-full.json")
    assert len(items) == 141
    report = report_of(items, layout=layout, orientation="portrait")
    pages = plan_pages(report)
    placed = [placement.index for page in pages for placement in page]
    # Every row of this dashboard has panels, so simple shows all row headers too.
    assert sorted(placed) == list(range(141))
    reader = read(build_pdf(report))
    assert len(reader.pages) == len(pages) > 10
    assert f"Page {len(pages)}/{len(pages)}" in reader.pages[-1].extract_text()
    box = content_box(report, 0)
    for page in pages:
        for placement in page:
            assert inside(placement.rect, box)


# ---------------------------------------------------------------------------------------
# Properties of the plan

grid_positions = st.builds(
    GridPos,
    x=st.integers(-3, 27),
    y=st.integers(-2, 120),
    w=st.integers(-1, 30),
    h=st.integers(-1, 90),
)
plan_items = st.lists(
    st.one_of(
        st.builds(PanelImage, png=st.just(TINY), grid=grid_positions, title=st.just("p")),
        st.builds(SectionTitle, title=st.just("row"), y=st.integers(-1, 120)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    items=plan_items,
    layout=st.sampled_from(["grid", "simple"]),
    orientation=st.sampled_from(["landscape", "portrait"]),
    show_header=st.booleans(),
    variables=st.sampled_from(["", "host=a"]),
)
def test_placements_stay_inside_and_never_overlap(
    items: list[PanelImage | SectionTitle],
    layout: Layout,
    orientation: Orientation,
    show_header: bool,
    variables: str,
) -> None:
    """Whatever the grid positions, every item is placed once, inside the content box, alone."""
    report = report_of(
        items, layout=layout, orientation=orientation, show_header=show_header, variables=variables
    )
    pages = plan_pages(report)
    box = content_box(report, 0)
    placed: list[int] = []
    for number, page in enumerate(pages):
        for i, placement in enumerate(page):
            assert placement.page == number
            assert placement.rect.width > 0
            assert placement.rect.height > 0
            assert inside(placement.rect, box), (placement, box)
            for other in page[:i]:
                assert overlap(placement.rect, other.rect) < 1e-6, (placement, other)
            placed.append(placement.index)
    panels = {i for i, item in enumerate(items) if isinstance(item, PanelImage)}
    assert len(placed) == len(set(placed))
    if layout == "grid":
        assert sorted(placed) == list(range(len(items)))
    else:
        assert panels <= set(placed)


# ---------------------------------------------------------------------------------------
# File structure, checked byte by byte (build_pdf writes the file itself, not through
# pypdf's writer)


def kitchen_sink_report(fonts: PdfFonts | None = None) -> PdfReport:
    """Two dashboards with every kind of image the writer handles, a logo and row headers."""
    opaque_rgba = [
        b"".join(row[i : i + 3] + b"\xff" for i in range(0, len(row), 3))
        for row in noise_pixels(5, 9, 3, seed=5)
    ]
    translucent = solid_png((10, 200, 30, 100), (30, 20), mode="RGBA")
    images = [
        solid_png(COLOURS[0]),
        solid_png((77,), (40, 20), mode="L"),
        encode_png(noise_pixels(23, 9, 3, seed=1), 23, 2, idat_size=16),
        encode_png(opaque_rgba, 5, 6),
        translucent,
        *(make() for make, _ in FALLBACKS.values()),
    ]
    items: list[PanelImage | SectionTitle] = [SectionTitle("First row", 0)]
    items += [
        PanelImage(png, GridPos(12 * (i % 2), 1 + 6 * (i // 2), 12, 6))
        for i, png in enumerate(images)
    ]
    second = DashboardPdf("Second", "r2", [PanelImage(images[0], GridPos(0, 0, 24, 8))])
    first = DashboardPdf("First", "r1", items, variables="host = a")
    return PdfReport(
        "Kitchen (sink) ✓",
        [first, second],
        generated="now",
        logo_png=solid_png((0, 0, 0, 128), mode="RGBA"),
        created=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        fonts=fonts,
    )


def xref_table(data: bytes) -> tuple[dict[int, int], int]:
    """A PDF's object offsets by number, from its one classic xref table, and its /Size.

    Asserts the syntax of the table on the way.
    """
    match = re.search(rb"startxref\n(\d+)\n%%EOF\n\Z", data)
    assert match is not None
    start = int(match.group(1))
    header = re.match(rb"xref\n0 (\d+)\n", data[start:])
    assert header is not None
    count = int(header.group(1))
    rows_at = start + header.end()
    rows = [data[rows_at + 20 * i : rows_at + 20 * (i + 1)] for i in range(count)]
    assert rows[0] == b"0000000000 65535 f \n"
    assert all(re.fullmatch(rb"\d{10} 00000 n \n", row) for row in rows[1:])
    trailer = re.match(rb"trailer\n<<(.*?)>>\n", data[rows_at + 20 * count :], re.DOTALL)
    assert trailer is not None
    size = re.search(rb"/Size (\d+)", trailer.group(1))
    assert size is not None
    return {number: int(row[:10]) for number, row in enumerate(rows) if number}, int(size[1])


@pytest.mark.parametrize("with_fonts", [False, True], ids=["helvetica", "embedded"])
def test_xref_offsets_point_at_their_objects(with_fonts: bool, dejavu: PdfFonts) -> None:
    """Every xref entry is where its object starts; every stream's /Length is exact.

    Most readers trust both (qpdf, PDFium, pypdf): a wrong offset or length would make them
    fall back to reconstructing the file, or fail.
    """
    data = build_pdf(kitchen_sink_report(dejavu if with_fonts else None))
    offsets, size = xref_table(data)
    assert sorted(offsets) == list(range(1, size))
    for number, offset in offsets.items():
        head = re.match(rb"(\d+) 0 obj\n(<<.*?>>)(\nstream\n|\nendobj\n)", data[offset:], re.DOTALL)
        assert head is not None, number
        assert int(head.group(1)) == number
        if head.group(3) == b"\nstream\n":
            length = re.findall(rb"/Length (\d+) >>\Z", head.group(2))
            assert len(length) == 1, number
            end = offset + head.end() + int(length[0])
            assert data[end:].startswith(b"\nendstream\nendobj\n"), number


@pytest.mark.parametrize("with_fonts", [False, True], ids=["helvetica", "embedded"])
def test_every_object_reads_strictly(
    caplog: pytest.LogCaptureFixture, with_fonts: bool, dejavu: PdfFonts
) -> None:
    """The strict reader resolves every object and image without a warning.

    Each page names the page tree as its parent, and the tree counts them all.
    """
    data = build_pdf(kitchen_sink_report(dejavu if with_fonts else None))
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        reader = read(data)
        _, size = xref_table(data)
        for number in range(1, size):
            assert reader.get_object(number) is not None
        tree = entry(reader.trailer["/Root"], "/Pages")
        assert entry(tree, "/Count") == len(reader.pages) == len(plan_pages(kitchen_sink_report()))
        for page in reader.pages:
            assert entry(page, "/Parent") == tree
            for image in page.images:
                assert image.image is not None
            page.extract_text()
    assert not caplog.records
    assert reader.pdf_header == "%PDF-1.4"


@pytest.mark.parametrize("with_fonts", [False, True], ids=["helvetica", "embedded"])
def test_every_page_renders(with_fonts: bool, dejavu: PdfFonts) -> None:
    """PDFium (Chrome's PDF engine) renders every page of the kitchen-sink report."""
    data = build_pdf(kitchen_sink_report(dejavu if with_fonts else None))
    pages = list(rendered_pages(data, scale=0.5))
    assert len(pages) == len(plan_pages(kitchen_sink_report()))
    for page in pages:
        colours = page.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 1  # not blank


@pytest.mark.parametrize("with_fonts", [False, True], ids=["helvetica", "embedded"])
def test_the_same_report_gives_the_same_bytes(with_fonts: bool, dejavu: PdfFonts) -> None:
    """A retried run makes the very same PDF: nothing depends on time or identity.

    With fonts, too: the subset's name comes from its glyphs, and its program keeps the
    font's own timestamps.
    """
    # One input: the kitchen sink's ICC-profiled PNG carries the time it was made.
    report = kitchen_sink_report(dejavu if with_fonts else None)
    assert build_pdf(report) == build_pdf(report)


def test_a_truncated_png_is_never_embedded_truncated() -> None:
    """The direct path never embeds the partial IDAT stream of a PNG cut short.

    Cut anywhere, the PNG goes to Pillow, which either decodes all of it or refuses it
    (InvalidImage).
    """
    rows = noise_pixels(17, 11, 3, seed=9)
    png = encode_png(rows, 17, 2, idat_size=40)
    for cut in range(len(png) - 1, 7, -3):
        report = report_of([PanelImage(png[:cut], GridPos(0, 0, 12, 8), "cut")])
        try:
            data = build_pdf(report)
        except InvalidImage:
            continue
        stream = xobject(read(data))
        assert "/DecodeParms" not in stream, cut  # not copied through
        assert stream.get_data() == b"".join(rows), cut


def test_unreadable_logo_says_so() -> None:
    """A logo that is no image raises InvalidImage naming the logo."""
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], logo_png=b"GIF89a?")
    with pytest.raises(InvalidImage, match=r"^logo: not a readable image"):
        build_pdf(report)


# ---------------------------------------------------------------------------------------
# Embedded fonts: Unicode text in TrueType fonts, subset to the glyphs shown

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
# Characters of the test font below that DejaVu Sans does not have.
CJK = "週次報告東京大阪監視日本語中文한국어"
ELLIPSIS = "\u2026"


@functools.cache
def dejavu_fonts() -> PdfFonts:
    """DejaVu Sans and DejaVu Sans Bold, as the Docker image installs them; read once."""
    try:
        regular = (DEJAVU / "DejaVuSans.ttf").read_bytes()
        bold = (DEJAVU / "DejaVuSans-Bold.ttf").read_bytes()
    except FileNotFoundError:
        pytest.fail("DejaVu Sans is missing: apt-get install fonts-dejavu-core (scripts/test does)")
    return PdfFonts(regular=PdfFont(regular), bold=PdfFont(bold))


@pytest.fixture(scope="session")
def dejavu() -> PdfFonts:
    """DejaVu Sans and DejaVu Sans Bold."""
    return dejavu_fonts()


def box_font(characters: str, *, truetype: bool = True) -> bytes:
    """A small font made here: a filled box for each character, CJK ones a full em wide.

    Latin boxes are 0.6 em wide, CJK ones (and the ellipsis) 1 em, the space 0.3 em;
    every box leaves 0.05 em blank on each side. `truetype=False` makes CFF outlines (an
    OpenType .otf).
    """
    builder = FontBuilder(1000, isTTF=truetype)
    names = {ord(char): f"uni{ord(char):04X}" for char in characters}
    order = [".notdef", "space", *names.values()]
    widths = {".notdef": 600, "space": 300}
    widths |= {name: 1000 if code > 0x2000 else 600 for code, name in names.items()}

    def draw(pen: Any, name: str) -> None:
        if name != "space":
            right = widths[name] - 50
            pen.moveTo((50, 0))
            pen.lineTo((50, 700))
            pen.lineTo((right, 700))
            pen.lineTo((right, 0))
            pen.closePath()

    builder.setupGlyphOrder(order)
    builder.setupCharacterMap({ord(" "): "space", **names})
    if truetype:
        glyphs = {}
        for name in order:
            pen = TTGlyphPen(None)
            draw(pen, name)
            glyphs[name] = pen.glyph()
        builder.setupGlyf(glyphs)
    else:
        charstrings = {}
        for name in order:
            pen = T2CharStringPen(widths[name], None)
            draw(pen, name)
            charstrings[name] = pen.getCharString()
        builder.setupCFF("SidecarTest", {"FullName": "Sidecar Test"}, charstrings, {})
    builder.setupHorizontalMetrics({name: (widths[name], 50) for name in order})
    builder.setupHorizontalHeader(ascent=880, descent=-120)
    builder.setupNameTable(
        {"familyName": "Sidecar Test", "styleName": "Regular", "psName": "SidecarTest-Regular"}
    )
    builder.setupOS2(sTypoAscender=880, sTypoDescender=-120, usWinAscent=880, usWinDescent=120)
    builder.setupPost()
    buffer = io.BytesIO()
    builder.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def boxes() -> PdfFonts:
    """The test font with ASCII, CJK and the ellipsis, as both faces."""
    ascii_printable = "".join(map(chr, range(0x21, 0x7F)))
    font = PdfFont(box_font(ascii_printable + CJK + ELLIPSIS))
    return PdfFonts(regular=font, bold=font)


def font_of(reader: PdfReader, resource: str, page: int = 0) -> DictionaryObject:
    """The font dictionary a page names `resource` (/F1 regular, /F2 bold)."""
    found = entry(entry(entry(reader.pages[page], "/Resources"), "/Font"), resource)
    assert isinstance(found, DictionaryObject)
    return found


def descendant(font: DictionaryObject) -> DictionaryObject:
    """The CIDFont of a Type0 font."""
    found = entry(font, "/DescendantFonts")[0].get_object()
    assert isinstance(found, DictionaryObject)
    return found


def to_unicode(font: DictionaryObject) -> dict[int, str]:
    """A Type0 font's ToUnicode CMap: glyph id -> text."""
    cmap = entry(font, "/ToUnicode").get_data()
    pairs = re.findall(rb"<([0-9A-F]{4})> <([0-9A-F]+)>", cmap)
    return {int(cid, 16): bytes.fromhex(text.decode()).decode("utf-16-be") for cid, text in pairs}


def cid_widths(font: DictionaryObject) -> dict[int, int]:
    """A Type0 font's glyph widths from its CIDFont's /W array (`first [w ...]` form)."""
    array = list(entry(descendant(font), "/W"))
    widths: dict[int, int] = {}
    for first, row in zip(array[::2], array[1::2], strict=True):
        for offset, width in enumerate(row):
            widths[int(first) + offset] = int(width)
    return widths


def font_program(font: DictionaryObject) -> bytes:
    """The embedded TrueType program of a Type0 font (decoded)."""
    descriptor = entry(descendant(font), "/FontDescriptor")
    stream = entry(descriptor, "/FontFile2")
    data = stream.get_data()
    assert entry(stream, "/Length1") == len(data)
    assert entry(stream, "/Filter") == "/FlateDecode"
    return bytes(data)


# A string drawn in an embedded font: `/F1 9 Tf x y Td <hex glyph ids> Tj`. Read from the
# bytes, because pypdf turns some hex strings into text (a leading FEFF reads as a BOM).
DRAWN_GLYPHS = re.compile(rb"(/F\d) ([\d.]+) Tf [-\d.]+ [-\d.]+ Td <([0-9a-f]*)> Tj")


def drawn_glyphs(reader: PdfReader, page: int = 0) -> list[tuple[str, float, list[int]]]:
    """(font resource, size, glyph ids) of every string a page draws in an embedded font."""
    contents = reader.pages[page].get_contents()
    assert contents is not None
    found = []
    for font, size, hexadecimal in DRAWN_GLYPHS.findall(contents.get_data()):
        raw = bytes.fromhex(hexadecimal.decode())
        glyphs = list(struct.unpack(f">{len(raw) // 2}H", raw))
        found.append((font.decode(), float(size), glyphs))
    return found


def shown_glyphs_in(reader: PdfReader, resource: str) -> list[list[int]]:
    """The glyph ids of every string the first page draws in `resource`, at any size."""
    return [glyphs for font, _, glyphs in drawn_glyphs(reader) if font == resource]


def title_glyphs(reader: PdfReader) -> list[int]:
    """The glyph ids of the dashboard title (bold, 10 pt)."""
    (glyphs,) = [
        glyphs for font, size, glyphs in drawn_glyphs(reader) if (font, size) == ("/F2", 10.0)
    ]
    return glyphs


def unicode_report(fonts: PdfFonts, texts: dict[str, str]) -> PdfReport:
    """A one-page report whose every text field (and a row header) is set from `texts`."""
    items: list[PanelImage | SectionTitle] = [
        SectionTitle(texts["section"], 0),
        PanelImage(TINY, GridPos(0, 1, 12, 4), "p"),
    ]
    return report_of(
        items,
        name=texts["name"],
        title=texts["title"],
        time_range=texts["time_range"],
        variables=texts["variables"],
        generated=texts["generated"],
        fonts=fonts,
    )


DEJAVU_TEXTS = {
    "name": "Еженедельный отчёт",
    "title": "Εβδομαδιαία αναφορά",
    "time_range": "Пн 10:00 – Вс 10:00",  # noqa: RUF001 - Cyrillic on purpose
    "variables": "host = Zürich, Łódź, Ærøskøbing, Cafe\u0301 n\u0303o, Հայերեն, ქართული",
    "generated": "2026-11-26 10:00 UTC ✓ ≤ ∞ °C",
    "section": "Ряд: ЦП и память",
}
CJK_TEXTS = {
    "name": "週次報告",
    "title": "東京 大阪 監視",
    "time_range": "2026-11-19 10:00 to 2026-11-26 10:00",
    "variables": "host = 日本語, 中文, 한국어",
    "generated": "2026-11-26 10:00 UTC",
    "section": "東京",
}


def pdfium_text(data: bytes) -> str:
    """The first page's text as PDFium extracts it (a second reader of the ToUnicode map)."""
    document = pdfium.PdfDocument(data)
    try:
        page = document[0]
        text = str(page.get_textpage().get_text_range())
        page.close()
    finally:
        document.close()
    return text


@pytest.mark.parametrize("script", ["dejavu", "cjk"])
def test_unicode_text_comes_back_exactly(
    script: str, dejavu: PdfFonts, boxes: PdfFonts, caplog: pytest.LogCaptureFixture
) -> None:
    """Cyrillic, Greek, accents (combining ones too), CJK: extracted exactly as given.

    pypdf and PDFium both extract each text field as it was, from a file the strict reader
    reads without a warning.
    """
    fonts, texts = (dejavu, DEJAVU_TEXTS) if script == "dejavu" else (boxes, CJK_TEXTS)
    data = build_pdf(unicode_report(fonts, texts))
    with caplog.at_level(logging.WARNING, logger="pypdf"):
        text = read(data).pages[0].extract_text()
    assert not caplog.records
    other = pdfium_text(data)
    for value in texts.values():
        assert value in text
        assert value in other


@pytest.mark.parametrize("script", ["dejavu", "cjk"])
def test_fonts_are_embedded_as_identity_h_subsets(
    script: str, dejavu: PdfFonts, boxes: PdfFonts
) -> None:
    """Each face is a Type0 font over a CIDFontType2 subset; CIDs are the font's glyph ids.

    Its /W widths are the font's own advances (hmtx, in 1/1000 em), its ToUnicode maps
    back to the text, and its FontFile2 program holds those glyphs at those ids.
    """
    fonts, texts = (dejavu, DEJAVU_TEXTS) if script == "dejavu" else (boxes, CJK_TEXTS)
    reader = read(build_pdf(unicode_report(fonts, texts)))
    for resource, face in (("/F1", fonts.regular), ("/F2", fonts.bold)):
        font = font_of(reader, resource)
        assert entry(font, "/Subtype") == "/Type0"
        assert entry(font, "/Encoding") == "/Identity-H"
        cid_font = descendant(font)
        assert entry(cid_font, "/Subtype") == "/CIDFontType2"
        assert entry(cid_font, "/CIDToGIDMap") == "/Identity"
        base_font = str(entry(font, "/BaseFont"))
        assert re.fullmatch(r"/[A-Z]{6}\+(SidecarTest-Regular|DejaVuSans(-Bold)?)", base_font)
        original = TTFont(io.BytesIO(face.data))
        units = original["head"].unitsPerEm
        order = original.getGlyphOrder()
        subset = TTFont(io.BytesIO(font_program(font)))
        widths = cid_widths(font)
        mapping = to_unicode(font)
        cmap = original.getBestCmap()
        shown = {gid for glyphs in shown_glyphs_in(reader, resource) for gid in glyphs}
        assert shown
        for gid in shown:
            name = order[gid]
            assert widths[gid] == round(original["hmtx"][name][0] * 1000 / units)
            assert cmap.get(ord(mapping[gid])) == name
            kept = subset["glyf"][subset.getGlyphOrder()[gid]]
            assert kept.numberOfContours == original["glyf"][name].numberOfContours


def test_the_subset_is_small(dejavu: PdfFonts) -> None:
    """For a short text, both subsets together add far less than 60 KB (the fonts are 1.4 MB).

    Only the glyphs shown, the parts of composite ones (DejaVu's Cyrillic io is its
    Cyrillic ie and a diaeresis, and that ie is the Latin e) and .notdef keep outlines.
    """
    items = [PanelImage(TINY, GridPos(0, 0, 12, 4))]
    without = build_pdf(report_of(items, name="Отчёт", title="Ελληνικά"))
    data = build_pdf(report_of(items, name="Отчёт", title="Ελληνικά", fonts=dejavu))
    assert len(data) - len(without) < 60_000
    reader = read(data)
    for resource in ("/F1", "/F2"):
        program = TTFont(io.BytesIO(font_program(font_of(reader, resource))))
        glyf = program["glyf"]
        order = program.getGlyphOrder()
        shown = {gid for glyphs in shown_glyphs_in(reader, resource) for gid in glyphs}
        parts: set[int] = set()
        pending = [order[gid] for gid in shown]
        while pending:
            for component in glyf[pending.pop()].getComponentNames(glyf):
                parts.add(program.getGlyphID(component))
                pending.append(component)
        outlined = {gid for gid, name in enumerate(order) if glyf[name].numberOfContours != 0}
        assert outlined <= shown | parts | {0}


def test_a_long_cjk_title_is_cut_by_the_fonts_widths(boxes: PdfFonts) -> None:
    """A CJK title too wide for the page is cut by the glyphs' real widths, and ends in `…`.

    Every CJK glyph of the test font is 1 em wide, so at 10 pt the 786 pt line holds 77 of
    them and the ellipsis (Helvetica's widths, 0.61 em for the `?` it would draw, would
    give 127). Rendered, the title's ink stops at the right margin.
    """
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], title="報" * 300, time_range="")
    data = build_pdf(dataclasses.replace(report, fonts=boxes))
    reader = read(data)
    glyphs = title_glyphs(reader)
    font = font_of(reader, "/F2")
    mapping = to_unicode(font)
    assert "".join(mapping[gid] for gid in glyphs) == "報" * 77 + ELLIPSIS
    width = sum(cid_widths(font)[gid] for gid in glyphs) * 10 / 1000
    assert width <= 842 - 2 * pdf.MARGIN
    (page,) = rendered_pages(data, scale=2)
    ink = ink_columns(page, 2 * 48, 2 * 58)  # the title line: 44 to 58 pt from the top
    assert min(ink) >= 2 * pdf.MARGIN
    assert 2 * (842 - pdf.MARGIN - 10) <= max(ink) <= 2 * (842 - pdf.MARGIN)


def test_a_long_cyrillic_title_is_cut_by_the_fonts_widths(dejavu: PdfFonts) -> None:
    """With DejaVu, a cut title is as wide as fits: one more letter would not."""
    report = report_of(
        [PanelImage(TINY, GridPos(0, 0, 6, 4))], title="Широкий " * 60, time_range="", fonts=dejavu
    )
    reader = read(build_pdf(report))
    glyphs = title_glyphs(reader)
    font = font_of(reader, "/F2")
    widths = cid_widths(font)
    text = "".join(to_unicode(font)[gid] for gid in glyphs)
    assert text.endswith(ELLIPSIS)
    assert ("Широкий " * 60).startswith(text[:-1])
    room = 842 - 2 * pdf.MARGIN
    assert sum(widths[gid] for gid in glyphs) * 10 / 1000 <= room
    next_letter = ("Широкий " * 60)[len(text) - 1]
    next_gid = dejavu.bold.face.gids[ord(next_letter)]
    next_width = round(
        TTFont(io.BytesIO(dejavu.bold.data))["hmtx"].metrics[
            TTFont(io.BytesIO(dejavu.bold.data)).getGlyphOrder()[next_gid]
        ][0]
        * 1000
        / 2048
    )
    assert (sum(widths[gid] for gid in glyphs) + next_width) * 10 / 1000 > room - 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ASCII", "plain ASCII"),
        ("報告 ok", "?? ok"),  # DejaVu has no CJK
        ("a\nb\tc\r", "a b c "),
        ("zero\u200bwidth\u200d", "zerowidth"),
        ("✓\ufe0f", "✓\ufe0f"),  # DejaVu has this variation selector (an empty glyph)
        ("✓\U000e0100", "✓"),  # but not this one: dropped, not `?`
        ("㎏ ㎡ 𝐀", "kg m2 A"),  # noqa: RUF001 - look-alikes on purpose  # not in DejaVu: their compatibility decompositions are
        ("lone \ud800 surrogate", "lone ? surrogate"),
        ("(paren) \\ back <hex>", "(paren) \\ back <hex>"),
        ("Cafe\u0301", "Cafe\u0301"),
    ],
)
def test_text_maps_to_the_fonts_glyphs(text: str, expected: str, dejavu: PdfFonts) -> None:
    """What each character becomes: its glyph, a space, nothing, its decomposition or `?`.

    Read back through the ToUnicode CMap, the title's glyphs spell `expected`.
    """
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], title=text, fonts=dejavu)
    reader = read(build_pdf(report))
    mapping = to_unicode(font_of(reader, "/F2"))
    assert "".join(mapping[gid] for gid in title_glyphs(reader)) == expected


def test_missing_glyphs_are_drawn_as_question_marks(dejavu: PdfFonts) -> None:
    """CJK in DejaVu (which has none) is DejaVu's `?`, and extracts as `?`."""
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], title="報告 ok", fonts=dejavu)
    reader = read(build_pdf(report))
    question = dejavu.bold.face.gids[ord("?")]
    assert title_glyphs(reader)[:2] == [question, question]
    assert "?? ok" in reader.pages[0].extract_text()


def test_embedded_glyphs_are_drawn_where_measured(boxes: PdfFonts) -> None:
    """PDFium draws the embedded glyphs with the widths the layout used.

    The test font's CJK glyphs are boxes 0.9 em wide on a 1 em advance: four of them at
    12 pt are ink from 0.6 pt to 47.4 pt after the margin, with three gaps between.
    """
    nothing: list[PanelImage | SectionTitle] = []
    report = report_of(nothing, name="報告報告", title="", time_range="", generated="", fonts=boxes)
    (page,) = rendered_pages(build_pdf(report), scale=4)
    # The name's baseline is 12 pt under the top margin; the boxes reach 0.7 em above it.
    row = int(4 * (pdf.MARGIN + 12 - 4))
    ink = ink_columns(page, row, row + 1)
    assert ink
    left, right = min(ink) / 4 - pdf.MARGIN, max(ink) / 4 - pdf.MARGIN
    assert left == pytest.approx(0.6, abs=0.5)
    assert right == pytest.approx(47.4, abs=0.5)
    gaps = sum(1 for a, b in itertools.pairwise(ink) if b - a > 1)
    assert gaps == 3


def test_the_header_is_not_blank_with_dejavu(dejavu: PdfFonts) -> None:
    """Cyrillic and Greek headers render as ink (not blank, not tofu-free nothing)."""
    (page,) = rendered_pages(build_pdf(unicode_report(dejavu, DEJAVU_TEXTS)), scale=2)
    header = page.crop((2 * 28, 2 * 28, page.width - 2 * 28, 2 * 70)).convert("L")
    dark = sum(header.histogram()[:128])
    assert dark > 500


def ink_columns(image: Image.Image, top: int, bottom: int) -> list[int]:
    """The x of every pixel column with ink (grey under 128) from row `top` to `bottom`."""
    band = image.crop((0, top, image.width, bottom)).convert("L")
    ink = band.point(lambda value: 255 if value < 128 else 0)
    return [x for x in range(ink.width) if ink.crop((x, 0, x + 1, ink.height)).getbbox()]


def test_without_fonts_text_stays_helvetica() -> None:
    """No fonts: the standard Helvetica faces with WinAnsiEncoding, nothing embedded."""
    data = build_pdf(report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], title="Отчёт"))
    reader = read(data)
    for resource, base in (("/F1", "/Helvetica"), ("/F2", "/Helvetica-Bold")):
        font = font_of(reader, resource)
        assert (entry(font, "/Subtype"), entry(font, "/BaseFont")) == ("/Type1", base)
        assert entry(font, "/Encoding") == "/WinAnsiEncoding"
    assert b"/FontFile2" not in data
    assert b"/Type0" not in data
    assert title_raw(reader) == b"?????"


def title_raw(reader: PdfReader) -> bytes:
    """The raw bytes of the dashboard title's string."""
    (raw,) = [raw for font, size, raw in drawn_strings(reader) if (font, size) == ("/F2", 10.0)]
    return raw


def test_a_face_that_shows_nothing_is_not_embedded(dejavu: PdfFonts) -> None:
    """Without a header or row headers the bold face draws nothing and is not subset."""
    report = report_of([PanelImage(TINY, GridPos(0, 0, 6, 4))], show_header=False, fonts=dejavu)
    data = build_pdf(report)
    reader = read(data)
    assert entry(font_of(reader, "/F1"), "/Subtype") == "/Type0"
    assert entry(font_of(reader, "/F2"), "/BaseFont") == "/Helvetica-Bold"
    assert data.count(b"/FontFile2") == 1


def test_one_font_for_both_faces_is_embedded_once(boxes: PdfFonts) -> None:
    """The same font as regular and bold is one subset, named by both resources."""
    data = build_pdf(unicode_report(boxes, CJK_TEXTS))
    reader = read(data)
    assert data.count(b"/FontFile2") == 1
    assert descendant(font_of(reader, "/F1")) == descendant(font_of(reader, "/F2"))


def test_fonts_are_checked_when_made() -> None:
    """Only TrueType fonts with a Unicode cmap are accepted; a collection gives its first."""
    with pytest.raises(InvalidFont, match="not a readable TrueType font"):
        PdfFont(b"not a font")
    with pytest.raises(InvalidFont, match="CFF outlines"):
        PdfFont(box_font("abc", truetype=False))
    collection = TTCollection()
    collection.fonts = [TTFont(io.BytesIO(box_font("abc"))), TTFont(io.BytesIO(box_font("xyz")))]
    buffer = io.BytesIO()
    collection.save(buffer)
    first = PdfFont(buffer.getvalue())
    assert first.face.name == "SidecarTest-Regular"
    assert ord("a") in first.face.gids
    assert ord("x") not in first.face.gids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(max_size=60),
    title=st.text(max_size=120),
    section=st.text(max_size=30),
    variables=st.text(max_size=80),
)
def test_any_unicode_text_gives_a_valid_pdf(
    name: str, title: str, section: str, variables: str
) -> None:
    """Arbitrary text never breaks the PDF, and every glyph drawn is one the PDF describes.

    The strict reader reads it; every glyph id shown has its width in /W and its text in
    the ToUnicode CMap; a title the font fully covers comes back as itself, or cut with `…`.
    (The fonts are not a fixture: hypothesis would print all their bytes in its report.)
    """
    dejavu = dejavu_fonts()
    items: list[PanelImage | SectionTitle] = [
        SectionTitle(section, 0),
        PanelImage(TINY, GridPos(0, 1, 12, 4), title),
    ]
    report = report_of(items, name=name, title=title, variables=variables, fonts=dejavu)
    data = build_pdf(report)
    reader = read(data)
    for resource in ("/F1", "/F2"):
        font = font_of(reader, resource)
        if entry(font, "/Subtype") != "/Type0":
            continue
        widths, mapping = cid_widths(font), to_unicode(font)
        for glyphs in shown_glyphs_in(reader, resource):
            assert all(gid in widths and gid in mapping for gid in glyphs)
    covered = dejavu.bold.face.gids
    plain = all(
        ord(char) in covered and unicodedata.category(char)[0] not in {"C", "M"} for char in title
    )
    if plain and title:
        shown = "".join(to_unicode(font_of(reader, "/F2"))[gid] for gid in title_glyphs(reader))
        assert shown == title or (
            shown.endswith(ELLIPSIS) and title.startswith(shown[:-1].rstrip(" "))
        )
