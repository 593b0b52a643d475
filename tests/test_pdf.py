"""Tests of `sidecar.pdf`: PDFs are read back with pypdf (strict) and rendered with PDFium."""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
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
    InvalidImage,
    PanelImage,
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


def kitchen_sink_report() -> PdfReport:
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


def test_xref_offsets_point_at_their_objects() -> None:
    """Every xref entry is where its object starts; every stream's /Length is exact.

    Most readers trust both (qpdf, PDFium, pypdf): a wrong offset or length would make them
    fall back to reconstructing the file, or fail.
    """
    data = build_pdf(kitchen_sink_report())
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


def test_every_object_reads_strictly(caplog: pytest.LogCaptureFixture) -> None:
    """The strict reader resolves every object and image without a warning.

    Each page names the page tree as its parent, and the tree counts them all.
    """
    data = build_pdf(kitchen_sink_report())
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
    assert not caplog.records
    assert reader.pdf_header == "%PDF-1.4"


def test_every_page_renders() -> None:
    """PDFium (Chrome's PDF engine) renders every page of the kitchen-sink report."""
    data = build_pdf(kitchen_sink_report())
    pages = list(rendered_pages(data, scale=0.5))
    assert len(pages) == len(plan_pages(kitchen_sink_report()))
    for page in pages:
        colours = page.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 1  # not blank


def test_the_same_report_gives_the_same_bytes() -> None:
    """A retried run makes the very same PDF: nothing depends on time or identity."""
    assert build_pdf(kitchen_sink_report()) == build_pdf(kitchen_sink_report())


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
