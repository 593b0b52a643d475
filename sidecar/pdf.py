"""Panel PNGs + layout + branding -> PDF bytes; pure and synchronous (run in a thread).

The module does no I/O: it takes PNG bytes and frozen dataclasses and returns the bytes of
an A4 PDF laid out like Grafana Enterprise's report (reference/enterprise-reporting.md §4).

```
PdfReport(name, generated, dashboards=[DashboardPdf(title, time_range, items=[...])], ...)
    │  plan_pages(report)    where every item goes: list of pages, each a list of Placement
    ▼
build_pdf(report) -> bytes   one page per plan entry, header and footer on every page
```

Layout (all lengths in PDF points, origin at the bottom left of the page):

* A4: 842 x 595 landscape, 595 x 842 portrait; a margin of `MARGIN` (28 pt, about 10 mm).
* Header band (when `show_header`): line 1 the report name (Helvetica-Bold 12) with the
  generation date right-aligned; line 2 the dashboard title (Helvetica-Bold 10) with the
  time range right-aligned; line 3 the variables, only when given; then a thin rule.
* Footer band: `Page n/N` on the left, the logo (at most 120 x 20 pt) on the right.
* `grid`: the 24 columns span the content width as they span a dashboard
  `PdfReport.grid_width_px` CSS px wide in Grafana (default `DASHBOARD_WIDTH_PX`, 1200),
  with Grafana's 8 px gutters; a panel `h` rows high is `h*30 + (h-1)*8` px, scaled by the
  same factor (at 1200 px: 0.655 pt/px in landscape, 0.449 in portrait), so a 24x8 panel
  keeps its 1200 x 296 px shape. Passing the width the panels were rendered at makes every
  image fill its box exactly. Panels whose rows
  overlap form a band that is never split: a band that does not fit goes to the next page;
  a band taller than a whole page is squeezed vertically to fit it. Dashboard row headers
  (`SectionTitle`) are drawn as bold text and are kept on the page of the band after them.
  Overlapping grid positions are pushed down, as Grafana's grid does, so panels never overlap.
* `simple`: one panel per page in landscape, three per page in portrait, in reading order;
  a row header is drawn in a strip at the top of the next panel's slot.
* Every image keeps its aspect ratio, fitted and centred in its box.

Images (reference/pdf-performance.md): an 8-bit, non-interlaced RGB or grey PNG without
tRNS or iCCP is not decoded at all; its IDAT zlib stream is written as the image's
`/FlateDecode` stream with a PNG predictor, straight from the caller's bytes. An 8-bit RGBA
PNG is inflated, the alpha bytes are taken out of the still-filtered scanlines (PNG filters
work per channel, so what remains is a valid filtered RGB stream) and the result is deflated
again; an `/SMask` is added only when some pixel is not fully opaque. Anything else (palette,
16-bit, interlaced, grey with alpha, tRNS, iCCP, not a PNG at all) is decoded by Pillow.

The file is written object by object, not through pypdf's PdfWriter (see "The file"
below): pages, content streams and image XObjects are formatted as bytes, each image's data
goes into the output as views of the caller's PNG bytes, and one join at the end makes the
only copy. Building a report costs a few times what copying its PNG bytes costs
(bench/pdf_assembly.py).

Text uses the standard Helvetica fonts with WinAnsiEncoding, so nothing is embedded.
Characters outside Windows-1252 become their closest Latin letter (`ő` -> `o`) or `?`.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from PIL import Image
from pypdf.generic import (
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    create_string_object,
)

from sidecar import __version__
from sidecar.model import GridPos, Layout, Orientation

__all__ = [
    "A4_LANDSCAPE",
    "A4_PORTRAIT",
    "DASHBOARD_WIDTH_PX",
    "MARGIN",
    "DashboardPdf",
    "InvalidImage",
    "PanelImage",
    "PdfReport",
    "Placement",
    "Rect",
    "SectionTitle",
    "build_pdf",
    "content_box",
    "plan_pages",
]

A4_LANDSCAPE = (842.0, 595.0)
A4_PORTRAIT = (595.0, 842.0)
MARGIN = 28.0

# Grafana's grid: 24 columns with 8 px gutters; rows are 30 px cells with 8 px gutters.
# 1200 px is a common dashboard width on a laptop; it makes text inside panels come out at
# about two thirds of its screen size in landscape, which stays readable on paper.
DASHBOARD_WIDTH_PX = 1200.0
GRID_COLUMNS = 24
_CELL_PX = 30.0
_GUTTER_PX = 8.0
_ROW_PITCH_PX = _CELL_PX + _GUTTER_PX

# Header line heights (the text styles are next to the text code); a rule under the lines.
_NAME_LEADING = 16.0
_TITLE_LEADING = 14.0
_VARIABLES_LEADING = 12.0
_HEADER_RULE_GAP = 4.0
_HEADER_TO_CONTENT = 8.0
_FOOTER_HEIGHT = 20.0
_PAGE_NUMBER_RISE = 6.0
_FOOTER_TO_CONTENT = 8.0
_LOGO_MAX_WIDTH = 120.0
_SIMPLE_PORTRAIT_PER_PAGE = 3
_SIMPLE_GAP = 12.0
_SIMPLE_TITLE_HEIGHT = 20.0
_SECTION_MAX_SIZE = 11.0
_TEXT_GAP = 12.0
_RULE_GREY = "0.75 G"

# Re-deflating the colour of an RGBA PNG: level 3 is about 3x faster than zlib's default
# level 6 for a few percent more bytes, and this path exists for robustness, not size.
_DEFLATE_LEVEL = 3

_EPSILON = 1e-6


class InvalidImage(ValueError):
    """A panel's image could not be read (neither a usable PNG nor anything Pillow opens)."""


@dataclass(frozen=True, slots=True)
class PanelImage:
    """One rendered panel: its PNG, its place on the dashboard grid, and its title."""

    png: bytes
    grid: GridPos
    title: str = ""


@dataclass(frozen=True, slots=True)
class SectionTitle:
    """A dashboard row header, drawn as bold text; `y` is in grid rows like `GridPos.y`."""

    title: str
    y: int


@dataclass(frozen=True, slots=True)
class DashboardPdf:
    """One dashboard of a report; every dashboard starts on a new page.

    `time_range` and `variables` are already formatted for display (the dashboard's time
    zone is the caller's concern); empty `variables` leaves that header line out.
    """

    title: str
    time_range: str
    items: Sequence[PanelImage | SectionTitle] = ()
    variables: str = ""


@dataclass(frozen=True, slots=True)
class PdfReport:
    """Everything `build_pdf` needs.

    `generated` is the header text of the generation date (e.g. "2026-11-26 10:00 UTC");
    `created`, when given, becomes the PDF's /CreationDate (left out when None, so the same
    input always gives the same bytes). `show_header=False` leaves the whole header band out
    (report name, date, dashboard title, time range, variables); the footer always shows.
    `grid_width_px` is the dashboard width (CSS px) that the content width stands for in the
    grid layout: the width the panels were rendered at.
    """

    name: str
    dashboards: Sequence[DashboardPdf]
    generated: str = ""
    layout: Layout = "grid"
    orientation: Orientation = "landscape"
    logo_png: bytes | None = None
    show_header: bool = True
    created: datetime | None = None
    grid_width_px: float = DASHBOARD_WIDTH_PX


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in PDF points: `x`, `y` is its bottom-left corner."""

    x: float
    y: float
    width: float
    height: float

    @property
    def top(self) -> float:
        """The y of the upper edge."""
        return self.y + self.height

    @property
    def right(self) -> float:
        """The x of the right edge."""
        return self.x + self.width

    def fit(self, width: float, height: float, *, align_right: bool = False) -> Rect:
        """The largest rectangle of `width`:`height` shape inside this one, centred.

        With `align_right` it sits at the right edge (and at the bottom) instead.
        """
        if width <= 0 or height <= 0:
            return self
        scale = min(self.width / width, self.height / height)
        fitted_w, fitted_h = width * scale, height * scale
        if align_right:
            return Rect(self.right - fitted_w, self.y, fitted_w, fitted_h)
        return Rect(
            self.x + (self.width - fitted_w) / 2,
            self.y + (self.height - fitted_h) / 2,
            fitted_w,
            fitted_h,
        )


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one item goes: `report.dashboards[dashboard].items[index]` on `page` (0-based).

    For a panel, `rect` is its box; the image is fitted and centred in it. For a section
    title, `rect` is the band its text is drawn in.
    """

    dashboard: int
    index: int
    item: PanelImage | SectionTitle
    page: int
    rect: Rect


# ---------------------------------------------------------------------------------------
# Page geometry


def _page_size(orientation: Orientation) -> tuple[float, float]:
    """A4 in points for the orientation."""
    return A4_LANDSCAPE if orientation == "landscape" else A4_PORTRAIT


def _header_height(report: PdfReport, dashboard: DashboardPdf) -> float:
    """Height of the header band from the top margin to its rule (0 without a header)."""
    if not report.show_header:
        return 0.0
    height = _NAME_LEADING + _TITLE_LEADING
    if dashboard.variables:
        height += _VARIABLES_LEADING
    return height + _HEADER_RULE_GAP


def content_box(report: PdfReport, dashboard: int) -> Rect:
    """The area between header and footer where the dashboard's items are placed."""
    page_w, page_h = _page_size(report.orientation)
    header = _header_height(report, report.dashboards[dashboard])
    top = page_h - MARGIN - (header + _HEADER_TO_CONTENT if header else 0.0)
    bottom = MARGIN + _FOOTER_HEIGHT + _FOOTER_TO_CONTENT
    return Rect(MARGIN, bottom, page_w - 2 * MARGIN, top - bottom)


# ---------------------------------------------------------------------------------------
# Planning


@dataclass(slots=True)
class _Cell:
    """An item's grid position after clamping and collision resolution."""

    index: int
    x: int
    y: int
    w: int
    h: int

    @property
    def bottom(self) -> int:
        """The first grid row below the cell."""
        return self.y + self.h


@dataclass(slots=True)
class _Band:
    """Cells whose rows overlap: a unit that is never split across pages."""

    start: int
    end: int
    cells: list[_Cell] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PagePlan:
    """One page: which dashboard's header it carries and what is on it."""

    dashboard: int
    placements: tuple[Placement, ...]


def _clamped_cell(index: int, item: PanelImage | SectionTitle) -> _Cell:
    """The item's cell, forced onto the 24-column grid (dashboards in the wild are messy)."""
    if isinstance(item, SectionTitle):
        return _Cell(index, 0, max(item.y, 0), GRID_COLUMNS, 1)
    pos = item.grid
    w = min(max(pos.w, 1), GRID_COLUMNS)
    x = min(max(pos.x, 0), GRID_COLUMNS - w)
    return _Cell(index, x, max(pos.y, 0), w, max(pos.h, 1))


def _resolve_collisions(cells: list[_Cell]) -> list[_Cell]:
    """Push cells down until none overlap, in reading order, as Grafana's grid does.

    Cells are taken by their original y, and a cell only ever moves down, so a placed cell
    ending above the current cell's original y can no longer collide with it or any later
    one: only the `active` cells need checking. They are kept sorted by y, so one pass finds
    the lowest free y: once an active cell starts below the candidate, every later one does
    too, and the candidate only moves down past cells that overlap it.
    """
    placed: list[_Cell] = []
    active: list[_Cell] = []
    for cell in sorted(cells, key=lambda c: (c.y, c.x, c.index)):
        active = [other for other in active if other.bottom > cell.y]
        for other in active:
            if other.y >= cell.bottom:
                break
            columns_overlap = other.x < cell.x + cell.w and cell.x < other.x + other.w
            if columns_overlap and other.bottom > cell.y:
                cell.y = other.bottom
        position = len(active)
        while position > 0 and active[position - 1].y > cell.y:
            position -= 1
        active.insert(position, cell)
        placed.append(cell)
    placed.sort(key=lambda c: (c.y, c.x, c.index))
    return placed


def _bands(cells: list[_Cell]) -> list[_Band]:
    """Group cells (sorted by y) into bands of transitively overlapping rows."""
    bands: list[_Band] = []
    for cell in cells:
        if bands and cell.y < bands[-1].end:
            bands[-1].end = max(bands[-1].end, cell.bottom)
            bands[-1].cells.append(cell)
        else:
            bands.append(_Band(cell.y, cell.bottom, [cell]))
    return bands


def _band_height_px(band: _Band) -> float:
    """The band's height in dashboard pixels, without the gutter under its last row."""
    return (band.end - band.start) * _ROW_PITCH_PX - _GUTTER_PX


def _gap_px(end: int, start: int) -> float:
    """Dashboard pixels between a band ending at row `end` and one starting at row `start`."""
    return (start - end) * _ROW_PITCH_PX + _GUTTER_PX


def _plan_grid(report: PdfReport, number: int, first_page: int) -> list[_PagePlan]:
    """Flow one dashboard's bands onto pages, keeping the grid's x positions."""
    dashboard = report.dashboards[number]
    box = content_box(report, number)
    scale = box.width / report.grid_width_px
    column_pitch = (report.grid_width_px + _GUTTER_PX) / GRID_COLUMNS
    cells = _resolve_collisions([_clamped_cell(i, item) for i, item in enumerate(dashboard.items)])
    bands = _bands(cells)
    pages: list[list[Placement]] = [[]]
    cursor = 0.0  # points used from the top of the content box on the current page
    previous_end = 0
    for position, band in enumerate(bands):
        height = _band_height_px(band) * scale
        squeeze = min(1.0, box.height / height)
        gap = _gap_px(previous_end, band.start) * scale
        need = gap + height * squeeze
        if _is_title_band(dashboard, band) and position + 1 < len(bands):
            # Keep a row header with the panels under it rather than alone at a page bottom.
            following = bands[position + 1]
            following_height = min(_band_height_px(following) * scale, box.height)
            need += _gap_px(band.end, following.start) * scale + following_height
        if pages[-1] and cursor + need > box.height + _EPSILON:
            pages.append([])
            cursor, gap = 0.0, 0.0
        if not pages[-1]:
            gap = 0.0
        band_top = box.top - cursor - gap
        for cell in band.cells:
            offset = (cell.y - band.start) * _ROW_PITCH_PX * scale * squeeze
            cell_h = (cell.h * _ROW_PITCH_PX - _GUTTER_PX) * scale * squeeze
            rect = Rect(
                box.x + cell.x * column_pitch * scale,
                band_top - offset - cell_h,
                (cell.w * column_pitch - _GUTTER_PX) * scale,
                cell_h,
            )
            item = dashboard.items[cell.index]
            pages[-1].append(Placement(number, cell.index, item, first_page + len(pages) - 1, rect))
        cursor += gap + height * squeeze
        previous_end = band.end
    return [_PagePlan(number, tuple(page)) for page in pages]


def _is_title_band(dashboard: DashboardPdf, band: _Band) -> bool:
    """Whether the band holds only row headers."""
    return all(isinstance(dashboard.items[cell.index], SectionTitle) for cell in band.cells)


def _plan_simple(report: PdfReport, number: int, first_page: int) -> list[_PagePlan]:
    """Panels in reading order, one per landscape page or three per portrait page.

    A row header is drawn in a strip at the top of the slot of the panel after it (the
    last few, when several rows in a row have no panels); one with no panel after it is
    left out.
    """
    dashboard = report.dashboards[number]
    box = content_box(report, number)
    per_page = 1 if report.orientation == "landscape" else _SIMPLE_PORTRAIT_PER_PAGE
    slot_h = (box.height - (per_page - 1) * _SIMPLE_GAP) / per_page
    most_titles = int(slot_h / 2 // _SIMPLE_TITLE_HEIGHT)
    cells = _resolve_collisions([_clamped_cell(i, item) for i, item in enumerate(dashboard.items)])
    pages: list[list[Placement]] = []
    titles: list[int] = []
    slots_used = per_page
    for cell in cells:
        if isinstance(dashboard.items[cell.index], SectionTitle):
            titles.append(cell.index)
            continue
        if slots_used == per_page:
            pages.append([])
            slots_used = 0
        page = first_page + len(pages) - 1
        top = box.top - slots_used * (slot_h + _SIMPLE_GAP)
        for index in titles[-most_titles:] if most_titles else []:
            strip = Rect(box.x, top - _SIMPLE_TITLE_HEIGHT, box.width, _SIMPLE_TITLE_HEIGHT)
            pages[-1].append(Placement(number, index, dashboard.items[index], page, strip))
            top -= _SIMPLE_TITLE_HEIGHT
        titles.clear()
        bottom = box.top - slots_used * (slot_h + _SIMPLE_GAP) - slot_h
        rect = Rect(box.x, bottom, box.width, top - bottom)
        pages[-1].append(Placement(number, cell.index, dashboard.items[cell.index], page, rect))
        slots_used += 1
    return [_PagePlan(number, tuple(page)) for page in pages or [[]]]


def _plan(report: PdfReport) -> list[_PagePlan]:
    """All pages of the report, each dashboard starting on a new page."""
    if not report.dashboards:
        raise ValueError("a report needs at least one dashboard")
    if not report.grid_width_px > 0:
        raise ValueError(f"grid_width_px must be positive, not {report.grid_width_px}")
    plan_dashboard = _plan_grid if report.layout == "grid" else _plan_simple
    pages: list[_PagePlan] = []
    for number in range(len(report.dashboards)):
        pages.extend(plan_dashboard(report, number, len(pages)))
    return pages


def plan_pages(report: PdfReport) -> list[list[Placement]]:
    """Where every item of every dashboard goes: one list of placements per page.

    A page can be empty (a dashboard without panels still gets its page with the header).
    `build_pdf` draws exactly this plan.

    Raises:
        ValueError: the report has no dashboards, or `grid_width_px` is not positive.
    """
    return [list(page.placements) for page in _plan(report)]


# ---------------------------------------------------------------------------------------
# Text


def _widths(table: str) -> tuple[int, ...]:
    """Glyph widths (1/1000 em) for bytes 0-255 from the 224 widths of bytes 32-255."""
    values = tuple(int(value) for value in table.split())
    return (0,) * 32 + values


# Widths of Windows-1252 bytes 32-255 in Helvetica and Helvetica-Bold, from Adobe's Core 14
# AFM files (Helvetica.afm, Helvetica-Bold.afm), which Adobe lets anyone use for any purpose.
# Undefined bytes are 0: `_winansi` never produces them.
_REGULAR_WIDTHS = _widths(
    "278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 "
    "556 556 556 556 278 278 584 584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 "
    "556 833 722 778 667 778 722 667 611 722 667 944 667 667 611 278 278 278 469 556 333 556 "
    "556 500 556 556 278 556 556 222 222 500 222 833 556 556 556 556 333 500 278 556 500 722 "
    "500 500 500 334 260 334 584 0 556 0 222 556 333 1000 556 556 333 1000 667 333 1000 0 611 "
    "0 0 222 222 333 333 350 556 1000 333 1000 500 333 944 0 500 667 278 333 556 556 556 556 "
    "260 556 333 737 370 556 584 333 737 333 400 584 333 333 333 556 537 278 333 333 365 556 "
    "834 834 834 611 667 667 667 667 667 667 1000 722 667 667 667 667 278 278 278 278 722 722 "
    "778 778 778 778 778 584 778 722 722 722 722 667 667 611 556 556 556 556 556 556 889 500 "
    "556 556 556 556 278 278 278 278 556 556 556 556 556 556 556 584 611 556 556 556 556 500 "
    "556 500"
)
_BOLD_WIDTHS = _widths(
    "278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556 "
    "556 556 556 556 333 333 584 584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 "
    "611 833 722 778 667 778 722 667 611 722 667 944 667 667 611 333 278 333 584 556 333 556 "
    "611 556 611 556 333 611 611 278 278 556 278 889 611 611 611 611 389 556 333 611 556 778 "
    "556 556 500 389 280 389 584 0 556 0 278 556 500 1000 556 556 333 1000 667 333 1000 0 611 "
    "0 0 278 278 500 500 350 556 1000 333 1000 556 333 944 0 500 667 278 333 556 556 556 556 "
    "280 556 333 737 370 556 584 333 737 333 400 584 333 333 333 611 556 278 333 333 365 556 "
    "834 834 834 611 722 722 722 722 722 722 1000 722 667 667 667 667 278 278 278 278 722 722 "
    "778 778 778 778 778 584 778 722 722 722 722 667 667 611 556 556 556 556 556 556 889 556 "
    "556 556 556 556 278 278 278 278 611 611 611 611 611 611 611 584 611 611 611 611 611 556 "
    "611 556"
)
_FONTS = {
    "regular": ("/F1", "/Helvetica", _REGULAR_WIDTHS),
    "bold": ("/F2", "/Helvetica-Bold", _BOLD_WIDTHS),
}
_ELLIPSIS = b"\x85"  # "…" in Windows-1252


def _winansi(text: str) -> bytes:
    """`text` as Windows-1252 bytes; never fails.

    Control characters become spaces (a newline in a title must not break the line
    layout), invisible format characters vanish, and characters outside the code page
    become their compatibility decomposition's encodable part (`ő` -> `o`, `ﬁ` -> `fi`)
    or `?`.
    """
    try:
        encoded = text.encode("cp1252")
    except UnicodeEncodeError:
        pass
    else:
        if not any(byte < 32 or byte == 127 for byte in encoded):  # noqa: PLR2004 - C0 + DEL
            return encoded
    out = bytearray()
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            out += b" "
            continue
        if category == "Cf":
            continue
        try:
            out += char.encode("cp1252")
        except UnicodeEncodeError:
            decomposed = unicodedata.normalize("NFKD", char).encode("cp1252", "ignore")
            out += bytes(b for b in decomposed if b >= 32 and b != 127) or b"?"  # noqa: PLR2004
    return bytes(out)


def _text_width(data: bytes, style: _Style) -> float:
    """Width in points of WinAnsi `data` set in `style`."""
    widths = _FONTS[style.font][2]
    return sum(map(widths.__getitem__, data)) * style.size / 1000.0


def _truncate(data: bytes, style: _Style, max_width: float) -> bytes:
    """`data` cut to `max_width` with a trailing ellipsis when it is too wide."""
    if _text_width(data, style) <= max_width:
        return data
    widths = _FONTS[style.font][2]
    budget = max_width * 1000.0 / style.size - widths[_ELLIPSIS[0]]
    used = 0
    for length, byte in enumerate(data):
        used += widths[byte]
        if used > budget:
            return data[:length].rstrip(b" ") + _ELLIPSIS
    return data  # unreachable: the whole text was too wide, so the loop returns


def _pdf_string(data: bytes) -> bytes:
    """A PDF literal string of WinAnsi bytes (no control characters are left in them)."""
    escaped = data.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + escaped + b")"


def _num(value: float) -> str:
    """A number for a content stream: at most 3 decimals, no exponent, no `-0`."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


@dataclass(frozen=True, slots=True)
class _Style:
    """A font face, size and fill colour for a run of text."""

    font: str
    size: float
    colour: str = "0 g"


_NAME_STYLE = _Style("bold", 12.0)
_TITLE_STYLE = _Style("bold", 10.0)
_SMALL_STYLE = _Style("regular", 9.0, "0.33 g")
_PAGE_NUMBER_STYLE = _Style("regular", 9.0)


def _text_op(data: bytes, style: _Style, x: float, y: float) -> bytes:
    """Content-stream operators that draw `data` with its baseline starting at (x, y)."""
    name = _FONTS[style.font][0]
    return (
        f"BT {style.colour} {name} {_num(style.size)} Tf {_num(x)} {_num(y)} Td ".encode()
        + _pdf_string(data)
        + b" Tj ET"
    )


def _pair_line(left: str, right: str, style: _Style, frame: Rect) -> list[bytes]:
    """`left` in `style` and small grey `right` right-aligned on the baseline `frame.y`.

    The right part gets at most half the width; the left part is cut to what remains, so
    the two never overlap.
    """
    ops: list[bytes] = []
    right_data = _truncate(_winansi(right), _SMALL_STYLE, frame.width / 2)
    right_width = _text_width(right_data, _SMALL_STYLE)
    if right_data:
        ops.append(_text_op(right_data, _SMALL_STYLE, frame.right - right_width, frame.y))
    left_room = frame.width - right_width - (_TEXT_GAP if right_data else 0.0)
    left_data = _truncate(_winansi(left), style, left_room)
    if left_data:
        ops.append(_text_op(left_data, style, frame.x, frame.y))
    return ops


def _header_ops(report: PdfReport, dashboard: DashboardPdf, page: Rect) -> list[bytes]:
    """The header band: report name and date, dashboard title and time range, variables."""
    width = page.width - 2 * MARGIN
    line_top = page.top - MARGIN
    baseline = line_top - _NAME_STYLE.size
    ops = _pair_line(report.name, report.generated, _NAME_STYLE, Rect(MARGIN, baseline, width, 0))
    line_top -= _NAME_LEADING
    baseline = line_top - _TITLE_STYLE.size
    ops += _pair_line(
        dashboard.title, dashboard.time_range, _TITLE_STYLE, Rect(MARGIN, baseline, width, 0)
    )
    line_top -= _TITLE_LEADING
    if dashboard.variables:
        data = _truncate(_winansi(dashboard.variables), _SMALL_STYLE, width)
        ops.append(_text_op(data, _SMALL_STYLE, MARGIN, line_top - _SMALL_STYLE.size))
        line_top -= _VARIABLES_LEADING
    rule = _num(line_top - _HEADER_RULE_GAP / 2)
    ops.append(
        f"{_RULE_GREY} 0.5 w {_num(MARGIN)} {rule} m {_num(MARGIN + width)} {rule} l S".encode()
    )
    return ops


# ---------------------------------------------------------------------------------------
# The file
#
# build_pdf writes the file itself instead of going through pypdf's PdfWriter, which copies
# every page it adds and serialises everything through its generic machinery: that cost
# 60-80 us per panel, 6-18x the time of copying the panels' bytes (bench/pdf_assembly.py).
# Objects are written as soon as they are complete, and the xref table records where each
# one starts. pypdf's generic objects serialise what is the same in every report (catalog,
# fonts), once, at import, and the text strings of the info dictionary, whose encoding and
# escaping are its business. Everything else is formatted here as bytes: the objects written
# once per page or per image have a fixed shape, and pypdf's serialiser, which escapes names
# character by character, took 25 us for a page dictionary and 45 us for an image's, more
# than all the rest of the per-panel work together; the page tree, xref table and trailer
# are the file's skeleton.

_Buffer = bytes | memoryview

# Objects every report has get fixed numbers: the constant ones can then be serialised
# once, at import, and pages can name the page tree, which is written last, when the pages
# are known.
_CATALOG = 1
_PAGE_TREE = 2
_INFO = 3
_FONT_RESOURCES = 4
_FONT_NUMBERS = {face: _FONT_RESOURCES + 1 + i for i, face in enumerate(_FONTS)}
_FIRST_FREE = _FONT_RESOURCES + 1 + len(_FONTS)


class _PdfFile:
    """A PDF file being written: its bytes as a list of parts, and where each object starts.

    `add` and `add_stream` write an object under the next free number; `put` writes one
    of the fixed numbers below `first_free`. `finish` appends the cross-reference table and
    the trailer and joins the parts once, so image data passed in as views of the caller's
    PNGs is copied exactly once, into the result.
    """

    __slots__ = ("_first_free", "_next", "_offsets", "_parts", "_size")

    def __init__(self, version: bytes, first_free: int) -> None:
        # A comment of bytes above 127 right after the header line tells transfer tools
        # that the file is binary (ISO 32000-1, 7.5.2).
        header = b"%PDF-" + version + b"\n%\xe2\xe3\xcf\xd3\n"
        self._parts: list[_Buffer] = [header]
        self._size = len(header)
        self._offsets: dict[int, int] = {}
        self._first_free = first_free
        self._next = first_free

    def put(self, number: int, value: bytes) -> None:
        """Write fixed object `number`, whose value in PDF syntax is `value`.

        Raises:
            ValueError: `number` is not a fixed number, or is written already.
        """
        if number in self._offsets or not 0 < number < self._first_free:
            raise ValueError(f"object {number} is not a fixed number, or is written already")
        self._write(number, value, (), 0, b"\nendobj\n")

    def add(self, value: bytes) -> int:
        """Write `value` (in PDF syntax) under the next free number, and return that number."""
        number = self._next
        self._next += 1
        self._write(number, value, (), 0, b"\nendobj\n")
        return number

    def add_stream(self, entries: bytes, data: Sequence[_Buffer]) -> int:
        """Write a stream of already encoded `data`; `entries` are its dictionary's but /Length."""
        number = self._next
        self._next += 1
        length = sum(map(len, data))  # every view is of bytes: len() counts bytes
        separator = b" " if entries else b""
        head = b"<< %s%s/Length %d >>\nstream\n" % (entries, separator, length)
        self._write(number, head, data, length, b"\nendstream\nendobj\n")
        return number

    def _write(
        self, number: int, head: bytes, data: Sequence[_Buffer], length: int, tail: bytes
    ) -> None:
        """Write object `number` as `head`, the `length` bytes of `data`, and `tail`."""
        self._offsets[number] = self._size
        start = b"%d 0 obj\n%s" % (number, head)
        self._parts.append(start)
        # Views of the caller's PNGs, kept as they are: the one copy is finish()'s join.
        self._parts += data
        self._parts.append(tail)
        self._size += len(start) + length + len(tail)

    def finish(self, root: int, info: int) -> bytes:
        """The whole file: the objects written, the xref table and the trailer.

        Raises:
            ValueError: a fixed object number was never written.
        """
        missing = [number for number in range(1, self._next) if number not in self._offsets]
        if missing:
            raise ValueError(f"objects {missing} were never written")
        xref = self._size
        # Every xref entry is exactly 20 bytes: 10-digit offset, 5-digit generation, "n", EOL.
        rows = [b"%010d 00000 n \n" % self._offsets[number] for number in range(1, self._next)]
        trailer = b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (self._next, root, info)
        self._parts += (b"xref\n0 %d\n0000000000 65535 f \n" % self._next, *rows, trailer)
        self._parts.append(b"startxref\n%d\n%%%%EOF\n" % xref)
        return b"".join(self._parts)


def _serialised(obj: PdfObject) -> bytes:
    """`obj` in PDF syntax, written by pypdf."""
    buffer = io.BytesIO()
    obj.write_to_stream(buffer)
    return buffer.getvalue()


def _ref(number: int) -> IndirectObject:
    """A reference to object `number` of the file being written.

    pypdf only needs the document of a reference to resolve it; writing one needs only the
    number, so there is none.
    """
    return IndirectObject(number, 0, None)


def _constant_objects() -> dict[int, bytes]:
    """The catalog, the font resources and the fonts, by number: the same in every report."""
    objects = {
        _CATALOG: DictionaryObject(
            {NameObject("/Type"): NameObject("/Catalog"), NameObject("/Pages"): _ref(_PAGE_TREE)}
        ),
        _FONT_RESOURCES: DictionaryObject(
            {
                NameObject(resource): _ref(_FONT_NUMBERS[face])
                for face, (resource, _, _) in _FONTS.items()
            }
        ),
    }
    for face, (_, base_font, _) in _FONTS.items():
        objects[_FONT_NUMBERS[face]] = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject(base_font),
                NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
            }
        )
    return {number: _serialised(obj) for number, obj in objects.items()}


_CONSTANT_OBJECTS = _constant_objects()


def _page_tree(pages: Sequence[int]) -> bytes:
    """The root of the page tree: every page, in order, as its one level of leaves."""
    kids = b" ".join(b"%d 0 R" % page for page in pages)
    return b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages))


def _page_object(media_box: bytes, xobjects: Sequence[tuple[bytes, int]], contents: int) -> bytes:
    """A page dictionary: its size, the shared fonts, its images by name, its content stream."""
    names = b" ".join(b"%s %d 0 R" % entry for entry in xobjects)
    return (
        b"<< /Type /Page /Parent %d 0 R /MediaBox %s"
        b" /Resources << /Font %d 0 R /XObject << %s >> >> /Contents %d 0 R >>"
    ) % (_PAGE_TREE, media_box, _FONT_RESOURCES, names, contents)


# ---------------------------------------------------------------------------------------
# Images

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB, _RGBA = 0, 2, 6
_CHANNELS = {_GREY: 1, _RGB: 3, _RGBA: 4}

# Filtered alpha bytes of a fully opaque image: (first pixel, other pixels) of the first
# row and of later rows, per PNG filter type. Predictors read 0 outside the image, so every
# filter turns an all-255 alpha channel into exactly these bytes, and no other alpha
# channel filters to them: comparing them needs no unfiltering.
_OPAQUE_ALPHA = {
    0: ((255, 255), (255, 255)),  # None
    1: ((255, 0), (255, 0)),  # Sub: 255 - left
    2: ((255, 255), (0, 0)),  # Up: 255 - above
    3: ((255, 128), (128, 0)),  # Average: 255 - floor((left + above) / 2)
    4: ((255, 0), (0, 0)),  # Paeth: 255 - the neighbour it predicts
}


# A NamedTuple rather than a frozen dataclass, here and for `_Embedded`: one is made per
# panel, and a frozen dataclass takes a microsecond to build, a sixth of the time it takes
# to copy a 64 KB panel.
class _Png(NamedTuple):
    """What the direct path needs from a PNG's chunks; `idat` are views into its bytes."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool
    needs_decoding: bool  # tRNS or iCCP: Pillow's path handles transparency and profiles
    idat: list[memoryview]


_CHUNK_HEAD = struct.Struct(">I4s")  # a chunk's data length and type
_IHDR = struct.Struct(">IIBBBBB")


def _parse_png(data: bytes) -> _Png | None:
    """The PNG's header and IDAT chunks, or None when `data` is not a well-formed PNG.

    A PNG cut short is not well formed: it must end with IEND, and no chunk may run past
    the end of the data, so that a truncated image data stream is never embedded. Chunk
    CRCs are not checked: the bytes come from the renderer over TCP, and a corrupt stream
    would only garble that one image in the viewer.

    Chromium writes IDAT in 4 KB chunks, so the loop runs once per 4 KB of image: it tests
    for IDAT first, and checks only once, at the end, that no chunk ran past the end (every
    later chunk would start past it too, which ends the loop).
    """
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view = memoryview(data)
    size = len(data)
    position = len(_PNG_SIGNATURE)
    header_at: int | None = None
    idat: list[memoryview] = []
    needs_decoding = False
    complete = False
    unpack_head, head_size = _CHUNK_HEAD.unpack_from, _CHUNK_HEAD.size  # looked up once
    while position + head_size <= size:
        length, kind = unpack_head(data, position)
        start = position + head_size
        position = start + length + 4  # after the CRC
        if kind == b"IDAT":
            idat.append(view[start : position - 4])
        elif kind == b"IHDR" and length == _IHDR.size:
            header_at = start
        elif kind in {b"tRNS", b"iCCP"}:
            needs_decoding = True
        elif kind == b"IEND":
            complete = True
            break
    if not complete or position > size or header_at is None or not idat:
        return None
    width, height, bit_depth, colour_type, _compression, _filter, interlace = _IHDR.unpack_from(
        data, header_at
    )
    if width == 0 or height == 0:
        return None
    return _Png(width, height, bit_depth, colour_type, interlace != 0, needs_decoding, idat)


class _Embedded(NamedTuple):
    """An image XObject written to the file: its object number and its size in pixels."""

    number: int
    width: int
    height: int


def _add_image(
    file: _PdfFile,
    data: Sequence[_Buffer],
    size: tuple[int, int],
    colour_space: bytes,
    *,
    predictor_colours: int | None = None,
    soft_mask: int | None = None,
) -> _Embedded:
    """Write an 8-bit image XObject whose `data` is already Flate-encoded.

    `predictor_colours` set means the rows are PNG-filtered with that many channels (a
    PNG's IDAT as it is); `soft_mask` is the object number of the alpha image, if any.
    """
    width, height = size
    parameters = b""
    if predictor_colours is not None:
        parameters = (
            b" /DecodeParms << /Predictor 15 /Colors %d /BitsPerComponent 8 /Columns %d >>"
            % (predictor_colours, width)
        )
    mask = b"" if soft_mask is None else b" /SMask %d 0 R" % soft_mask
    entries = (
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s"
        b" /BitsPerComponent 8 /Filter /FlateDecode%s%s"
    ) % (width, height, colour_space, parameters, mask)
    return _Embedded(file.add_stream(entries, data), width, height)


def _split_alpha(raw: bytes, width: int, height: int) -> tuple[bytearray, bytearray, bool] | None:
    """Filtered RGBA scanlines -> (filtered RGB, filtered alpha, alpha all 255).

    PNG filters predict each byte from the same channel of neighbouring pixels, so taking
    channels out of filtered rows leaves valid filtered rows of fewer channels. None when a
    row has an unknown filter type (a corrupt PNG, left to Pillow to report).
    """
    stride = 1 + 4 * width
    rgb_stride = 1 + 3 * width
    alpha_stride = 1 + width
    rgb = bytearray(height * rgb_stride)
    alpha = bytearray(height * alpha_stride)
    opaque = True
    rests = {value: bytes([value]) * (width - 1) for value in (0, 128, 255)}
    for row in range(height):
        start = row * stride
        end = start + stride
        kind = raw[start]
        expected = _OPAQUE_ALPHA.get(kind)
        if expected is None:
            return None
        out = row * rgb_stride
        rgb[out] = kind
        rgb[out + 1 : out + rgb_stride : 3] = raw[start + 1 : end : 4]
        rgb[out + 2 : out + rgb_stride : 3] = raw[start + 2 : end : 4]
        rgb[out + 3 : out + rgb_stride : 3] = raw[start + 3 : end : 4]
        alpha_row = raw[start + 4 : end : 4]
        a_out = row * alpha_stride
        alpha[a_out] = kind
        alpha[a_out + 1 : a_out + alpha_stride] = alpha_row
        if opaque:
            first, rest = expected[0 if row == 0 else 1]
            opaque = alpha_row[0] == first and alpha_row[1:] == rests[rest]
    return rgb, alpha, opaque


def _embed_rgba(file: _PdfFile, png: _Png) -> _Embedded | None:
    """Inflate an 8-bit RGBA PNG, split off alpha while still filtered, deflate again."""
    expected = png.height * (1 + 4 * png.width)
    inflater = zlib.decompressobj()
    parts: list[bytes] = []
    produced = 0
    for chunk in png.idat:
        # Bounded, so that a header that lies cannot make us inflate a decompression bomb.
        # (max_length 0 would mean "unbounded", hence the check before the call.)
        room = expected + 1 - produced
        if room <= 0:
            return None
        parts.append(inflater.decompress(chunk, room))
        produced += len(parts[-1])
        if inflater.unconsumed_tail:
            return None
    raw = b"".join(parts)
    del parts
    if len(raw) != expected:
        return None
    split = _split_alpha(raw, png.width, png.height)
    del raw
    if split is None:
        return None
    rgb, alpha, opaque = split
    size = (png.width, png.height)
    mask = None
    if not opaque:
        data = zlib.compress(alpha, _DEFLATE_LEVEL)
        mask = _add_image(file, (data,), size, b"/DeviceGray", predictor_colours=1).number
    del alpha
    data = zlib.compress(rgb, _DEFLATE_LEVEL)
    del rgb
    return _add_image(file, (data,), size, b"/DeviceRGB", predictor_colours=3, soft_mask=mask)


def _embed_direct(file: _PdfFile, png: _Png) -> _Embedded | None:
    """Embed a PNG without decoding it when its format allows, else None."""
    if png.bit_depth != 8 or png.interlaced or png.needs_decoding:  # noqa: PLR2004
        return None
    if png.colour_type == _RGBA:
        return _embed_rgba(file, png)
    if png.colour_type not in {_GREY, _RGB}:
        return None
    space = b"/DeviceGray" if png.colour_type == _GREY else b"/DeviceRGB"
    size = (png.width, png.height)
    return _add_image(file, png.idat, size, space, predictor_colours=_CHANNELS[png.colour_type])


_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT_MAX = 65535.0


def _icc_colour_space(file: _PdfFile, profile: object, grey: bool) -> bytes:
    """An /ICCBased colour space for the image's embedded profile, if it matches its mode."""
    device = b"/DeviceGray" if grey else b"/DeviceRGB"
    if not isinstance(profile, bytes) or len(profile) < 20:  # noqa: PLR2004 - the ICC header
        return device
    expected = b"GRAY" if grey else b"RGB "
    if profile[16:20] != expected:
        return device
    entries = b"/N %d /Filter /FlateDecode" % (1 if grey else 3)
    number = file.add_stream(entries, (zlib.compress(profile),))
    return b"[/ICCBased %d 0 R]" % number


def _embed_decoded(file: _PdfFile, data: bytes) -> _Embedded:
    """Decode any image Pillow reads and embed it as 8-bit grey or RGB (+ soft mask)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _embed_pillow(file, image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InvalidImage(f"not a readable image ({error})") from error


def _embed_pillow(file: _PdfFile, image: Image.Image) -> _Embedded:
    """Embed a decoded Pillow image."""
    grey = image.mode in _GREY_MODES
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    profile = image.info.get("icc_profile")
    mask: Image.Image | None = None
    if has_alpha:
        with_alpha = image.convert("LA" if grey else "RGBA")
        alpha = with_alpha.getchannel("A")
        if alpha.getextrema() != (255, 255):
            mask = alpha
        colour = with_alpha.convert("L" if grey else "RGB")
    elif image.mode in _WIDE_GREY_MODES:
        # Pillow's I;16 -> L conversion clips at 255; scale 16 bits down to 8 instead.
        colour = image.convert("I").point(lambda value: value * 255.0 / _SIXTEEN_BIT_MAX)
        colour = colour.convert("L")
    else:
        colour = image.convert("L" if grey else "RGB")
    size = colour.size
    soft_mask = None
    if mask is not None:
        data = zlib.compress(mask.tobytes(), _DEFLATE_LEVEL)
        soft_mask = _add_image(file, (data,), size, b"/DeviceGray").number
    colour_space = _icc_colour_space(file, profile, grey)
    data = zlib.compress(colour.tobytes(), _DEFLATE_LEVEL)
    return _add_image(file, (data,), size, colour_space, soft_mask=soft_mask)


def _embed(file: _PdfFile, data: bytes) -> _Embedded:
    """Embed one image: directly when the PNG allows, else through Pillow.

    Raises:
        InvalidImage: neither path can read `data`; the caller says which image it was.
    """
    png = _parse_png(data)
    if png is not None:
        embedded = _embed_direct(file, png)
        if embedded is not None:
            return embedded
    return _embed_decoded(file, data)


# ---------------------------------------------------------------------------------------
# Writing


def _image_op(name: bytes, rect: Rect) -> bytes:
    """Draw XObject `name` filling `rect`.

    One format for the whole matrix rather than `_num` for each number, which took a
    microsecond per panel; trailing zeros only cost a few bytes. The numbers are sizes and
    positions on the page, never negative, so `-0` cannot come out.
    """
    return b"q %.3f 0 0 %.3f %.3f %.3f cm %s Do Q" % (rect.width, rect.height, rect.x, rect.y, name)


def _section_op(title: str, rect: Rect) -> bytes:
    """A row header's text, vertically centred in its band."""
    style = _Style("bold", min(_SECTION_MAX_SIZE, rect.height * 0.75))
    data = _truncate(_winansi(title), style, rect.width)
    # 0.72 em is Helvetica's cap height: centre the capitals, not the em box.
    baseline = rect.y + (rect.height - style.size * 0.72) / 2
    return _text_op(data, style, rect.x, baseline)


def _pdf_date(moment: datetime) -> str:
    """A PDF date string (`D:YYYYMMDDHHmmSS+HH'mm'`); naive times are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"D:{moment:%Y%m%d%H%M%S}{sign}{hours:02d}'{mins:02d}'"


def _metadata_text(text: str) -> str:
    """Text that pypdf can store in the info dictionary (no lone surrogates)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _pdf_text(text: str) -> bytes:
    """A text string in PDF syntax; pypdf picks the encoding (PDFDocEncoding, else UTF-16)."""
    return _serialised(create_string_object(text))


# The same in every report, so serialised once: pypdf escapes strings character by
# character, which took longer than the rest of the info dictionary.
_PRODUCER_AND_CREATOR = b"/Producer %s /Creator %s" % (
    _pdf_text(f"grafana-reporting-sidecar {__version__}"),
    _pdf_text("grafana-reporting-sidecar"),
)


def _info(report: PdfReport) -> bytes:
    """The document information dictionary: title, producer, creator, creation date."""
    entries = b"/Title %s %s" % (_pdf_text(_metadata_text(report.name)), _PRODUCER_AND_CREATOR)
    if report.created is not None:
        entries += b" /CreationDate %s" % _pdf_text(_pdf_date(report.created))
    return b"<< %s >>" % entries


@dataclass(slots=True)
class _Document:
    """The file and what pages share while they are written."""

    report: PdfReport
    file: _PdfFile
    logo: _Embedded | None
    page_count: int
    media_box: bytes = field(init=False)
    # The logo sits at the same place on every page: drawn once (empty without a logo).
    logo_op: bytes = field(init=False)
    # Keyed by the identity of the bytes, so a PNG shared by two items is stored once.
    images: dict[int, _Embedded] = field(default_factory=dict)
    # Every page of a dashboard has the same header: drawn once, by dashboard number.
    headers: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        page_w, page_h = _page_size(self.report.orientation)
        self.media_box = f"[0 0 {_num(page_w)} {_num(page_h)}]".encode()
        self.logo_op = b""
        if self.logo is not None:
            box = Rect(page_w - MARGIN - _LOGO_MAX_WIDTH, MARGIN, _LOGO_MAX_WIDTH, _FOOTER_HEIGHT)
            logo_rect = box.fit(self.logo.width, self.logo.height, align_right=True)
            self.logo_op = _image_op(b"/Logo", logo_rect)

    def header(self, number: int) -> bytes:
        """The header operators of dashboard `number`'s pages (empty without a header)."""
        found = self.headers.get(number)
        if found is None:
            found = b""
            if self.report.show_header:
                page_w, page_h = _page_size(self.report.orientation)
                page = Rect(0, 0, page_w, page_h)
                dashboard = self.report.dashboards[number]
                found = b"\n".join(_header_ops(self.report, dashboard, page))
            self.headers[number] = found
        return found

    def image(self, panel: PanelImage, dashboard: DashboardPdf) -> _Embedded:
        """The panel's image XObject, written on first use."""
        found = self.images.get(id(panel.png))
        if found is None:
            try:
                found = _embed(self.file, panel.png)
            except InvalidImage as error:
                # Named only now: formatting the name for every panel would cost time.
                where = f"panel {panel.title!r} of dashboard {dashboard.title!r}"
                raise InvalidImage(f"{where}: {error}") from error
            self.images[id(panel.png)] = found
        return found


def _write_page(document: _Document, number: int, plan: _PagePlan) -> int:
    """Write page `number` (0-based): header, footer, and the planned items.

    Returns the page object's number. The images a page shows for the first time are
    written just before it.
    """
    report = document.report
    dashboard = report.dashboards[plan.dashboard]
    label = f"Page {number + 1}/{document.page_count}".encode()
    ops = [
        document.header(plan.dashboard),
        _text_op(label, _PAGE_NUMBER_STYLE, MARGIN, MARGIN + _PAGE_NUMBER_RISE),
    ]
    xobjects: list[tuple[bytes, int]] = []
    if document.logo is not None:
        xobjects.append((b"/Logo", document.logo.number))
        ops.append(document.logo_op)
    for slot, placement in enumerate(plan.placements):
        item = placement.item
        if isinstance(item, SectionTitle):
            ops.append(_section_op(item.title, placement.rect))
            continue
        image = document.image(item, dashboard)
        name = b"/Im%d" % slot
        xobjects.append((name, image.number))
        ops.append(_image_op(name, placement.rect.fit(image.width, image.height)))
    if not dashboard.items:
        box = content_box(report, plan.dashboard)
        ops.append(_text_op(b"This dashboard has no panels.", _SMALL_STYLE, box.x, box.top - 10))
    # Left uncompressed: a page's operators are a few hundred bytes, next to the images'
    # hundreds of kilobytes, and compressing them would cost more time than it saves.
    contents = document.file.add_stream(b"", (b"\n".join(ops),))
    return document.file.add(_page_object(document.media_box, xobjects, contents))


def build_pdf(report: PdfReport) -> bytes:
    """The report as PDF bytes, laid out as `plan_pages(report)` says.

    Raises:
        ValueError: the report has no dashboards, or `grid_width_px` is not positive.
        InvalidImage: a panel's PNG or the logo cannot be read.
    """
    plan = _plan(report)
    # Soft masks need PDF 1.4.
    file = _PdfFile(b"1.4", _FIRST_FREE)
    for number, body in _CONSTANT_OBJECTS.items():
        file.put(number, body)
    file.put(_INFO, _info(report))
    logo = None
    if report.logo_png:
        try:
            logo = _embed(file, report.logo_png)
        except InvalidImage as error:
            raise InvalidImage(f"logo: {error}") from error
    document = _Document(report, file, logo, len(plan))
    pages = [_write_page(document, number, page_plan) for number, page_plan in enumerate(plan)]
    file.put(_PAGE_TREE, _page_tree(pages))
    return file.finish(_CATALOG, _INFO)
