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
* Header band (when `show_header`): line 1 the report name (bold 12) with the
  generation date right-aligned; line 2 the dashboard title (bold 10) with the
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

Text, without `PdfReport.fonts`, uses the standard Helvetica fonts with WinAnsiEncoding,
so nothing is embedded: the fastest output, but characters outside Windows-1252 become
their closest Latin letter (`ő` -> `o`) or `?`. With `fonts` (TrueType faces the caller
has read, such as DejaVu Sans), text is set in them instead, and each face that shows any
text is embedded as a subset holding just the glyphs the report shows (see "Embedded
fonts" below): Cyrillic, Greek, CJK, whatever the font covers, searchable and copyable.
Characters the font lacks become `?`. Text is set glyph by glyph, as with Helvetica: no
kerning, ligatures or shaping, and no reordering of right-to-left scripts (Arabic and
Hebrew show their letters in logical order, unjoined; their text still extracts as given).
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from fontTools import subset
from fontTools.ttLib import TTFont, newTable
from fontTools.ttLib.tables._c_m_a_p import CmapSubtable
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
    "InvalidFont",
    "InvalidImage",
    "PanelImage",
    "PdfFont",
    "PdfFonts",
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


class InvalidFont(ValueError):
    """Font bytes are not a TrueType font that reports can be set in."""


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


@dataclass(frozen=True, slots=True, eq=False)
class PdfFont:
    """A TrueType font to set report text in: a .ttf's bytes, or a .ttc's (its first font).

    Read and checked once, when made (about 50 ms for DejaVu Sans: make it once, at
    startup, and share it; it never changes, so threads may share it too). Equal only to
    itself: comparing fonts byte by byte would cost more than it tells.

    Raises:
        InvalidFont: `data` is no TrueType font, or one with CFF outlines (.otf), or one
            without a Unicode character map.
    """

    data: bytes = field(repr=False)
    # What build_pdf needs of the font, read from `data` once: see `_Face`.
    face: _Face = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "face", _parse_font(self.data))


@dataclass(frozen=True, slots=True)
class PdfFonts:
    """The two faces report text is set in; both may be the same font.

    `bold` sets the report name, the dashboard titles and the row headers, `regular` the rest.
    """

    regular: PdfFont
    bold: PdfFont


@dataclass(frozen=True, slots=True)
class PdfReport:
    """Everything `build_pdf` needs.

    `generated` is the header text of the generation date (e.g. "2026-11-26 10:00 UTC");
    `created`, when given, becomes the PDF's /CreationDate (left out when None, so the same
    input always gives the same bytes). `show_header=False` leaves the whole header band out
    (report name, date, dashboard title, time range, variables); the footer always shows.
    `grid_width_px` is the dashboard width (CSS px) that the content width stands for in the
    grid layout: the width the panels were rendered at. `fonts` None sets text in the
    standard Helvetica (Windows-1252 characters only, nothing embedded); with fonts, text
    is set in them and their used glyphs are embedded. Layout does not depend on the fonts:
    only where long text is cut does.
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
    fonts: PdfFonts | None = None


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


# Helvetica's capital letters are 0.72 em high (Helvetica.afm's CapHeight, 718).
_HELVETICA_CAP_HEIGHT = 0.72


class _Typesetter(Protocol):
    """Text -> content-stream operators, in one set of fonts.

    `fit` encodes text for `show` and `width`; the encoded bytes mean something only to the
    typesetter that made them (Windows-1252 bytes for Helvetica, 2-byte glyph ids for
    embedded fonts), and only for the face of the style they were made for.
    """

    def fit(self, text: str, style: _Style, max_width: float) -> bytes:
        """`text` encoded, and cut to `max_width` points with a trailing ellipsis if wider."""

    def width(self, data: bytes, style: _Style) -> float:
        """The width in points of encoded `data` set in `style`."""

    def show(self, data: bytes, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw encoded `data` with its baseline starting at (x, y)."""

    def show_plain(self, text: str, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw this module's own ASCII `text` (page numbers, notes), uncut."""

    def cap_height(self, style: _Style) -> float:
        """The height of capital letters in the face of `style`, in ems."""


class _StandardText:
    """The standard Helvetica fonts with WinAnsiEncoding: nothing to embed, nothing to subset.

    Each method is the function the module used before fonts could be embedded, so a
    report without fonts comes out byte for byte as it did then.
    """

    __slots__ = ()

    def fit(self, text: str, style: _Style, max_width: float) -> bytes:
        """`text` as Windows-1252 bytes, cut to `max_width` points."""
        return _truncate(_winansi(text), style, max_width)

    def width(self, data: bytes, style: _Style) -> float:
        """The width in points of Windows-1252 `data` in `style`."""
        return _text_width(data, style)

    def show(self, data: bytes, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw Windows-1252 `data` at (x, y)."""
        return _text_op(data, style, x, y)

    def show_plain(self, text: str, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw ASCII `text` at (x, y)."""
        return _text_op(text.encode(), style, x, y)

    def cap_height(self, style: _Style) -> float:  # noqa: ARG002 - same in both faces
        """Helvetica's cap height."""
        return _HELVETICA_CAP_HEIGHT


_STANDARD_TEXT = _StandardText()


def _pair_line(text: _Typesetter, left: str, right: str, style: _Style, frame: Rect) -> list[bytes]:
    """`left` in `style` and small grey `right` right-aligned on the baseline `frame.y`.

    The right part gets at most half the width; the left part is cut to what remains, so
    the two never overlap.
    """
    ops: list[bytes] = []
    right_data = text.fit(right, _SMALL_STYLE, frame.width / 2)
    right_width = text.width(right_data, _SMALL_STYLE)
    if right_data:
        ops.append(text.show(right_data, _SMALL_STYLE, frame.right - right_width, frame.y))
    left_room = frame.width - right_width - (_TEXT_GAP if right_data else 0.0)
    left_data = text.fit(left, style, left_room)
    if left_data:
        ops.append(text.show(left_data, style, frame.x, frame.y))
    return ops


def _header_ops(
    text: _Typesetter, report: PdfReport, dashboard: DashboardPdf, page: Rect
) -> list[bytes]:
    """The header band: report name and date, dashboard title and time range, variables."""
    width = page.width - 2 * MARGIN
    line_top = page.top - MARGIN
    baseline = line_top - _NAME_STYLE.size
    frame = Rect(MARGIN, baseline, width, 0)
    ops = _pair_line(text, report.name, report.generated, _NAME_STYLE, frame)
    line_top -= _NAME_LEADING
    baseline = line_top - _TITLE_STYLE.size
    frame = Rect(MARGIN, baseline, width, 0)
    ops += _pair_line(text, dashboard.title, dashboard.time_range, _TITLE_STYLE, frame)
    line_top -= _TITLE_LEADING
    if dashboard.variables:
        data = text.fit(dashboard.variables, _SMALL_STYLE, width)
        ops.append(text.show(data, _SMALL_STYLE, MARGIN, line_top - _SMALL_STYLE.size))
        line_top -= _VARIABLES_LEADING
    rule = _num(line_top - _HEADER_RULE_GAP / 2)
    ops.append(
        f"{_RULE_GREY} 0.5 w {_num(MARGIN)} {rule} m {_num(MARGIN + width)} {rule} l S".encode()
    )
    return ops


# ---------------------------------------------------------------------------------------
# Embedded fonts
#
# With `PdfReport.fonts`, each face that shows text is embedded as a composite font: a
# Type0 font with the Identity-H encoding over a CIDFontType2 with /CIDToGIDMap /Identity,
# so a string in a content stream is a hex string of 2-byte glyph ids of the font as the
# caller gave it. A /W array gives the viewer the advance widths the layout used (hmtx,
# in 1/1000 em), and a /ToUnicode CMap maps each glyph back to its text, for search, copy
# and text extraction.
#
# Text is encoded while the pages are written, one at a time; which glyphs the report
# shows is known only after the last page, and only then is each face subset, once per
# report. fontTools keeps every used glyph at its own id (`retain_gids`) and empties the
# rest, which is what lets the pages name glyph ids before the subset exists. The ids past
# the last used glyph are cut off, and the empty ones before it cost 4 bytes each in loca
# and hmtx, which deflate to almost nothing.
#
# fontTools takes about 12 ms to subset DejaVu Sans, most of it reading and writing the
# glyf table. It would take 60: `PdfFont` drops, once, at startup, every table a subset
# does not keep (GSUB and GPOS above all, which fontTools reads before it drops them).

# Tables of the embedded program: what a TrueType rasteriser needs to draw glyphs
# (ISO 32000-1, 9.9), plus OS/2 and name, which identify the font to viewers that ask; cmap
# and post are rebuilt small for each subset. Left out: the hinting programs (fpgm, prep,
# cvt; viewers draw at every scale, mostly unhinted, and DejaVu's instructions would
# triple the subset's size), and the layout tables (GSUB, GPOS, kern): text is set glyph
# by glyph, without shaping or kerning.
_PROGRAM_TABLES = frozenset({"head", "hhea", "maxp", "hmtx", "loca", "glyf", "OS/2", "name"})
_SUBSET_OPTIONS = {
    "retain_gids": True,  # glyph ids are the CIDs the pages were written with
    "hinting": False,
    "notdef_outline": True,  # glyph 0 draws a box where the font has nothing better
    "glyph_names": False,
    "layout_features": [],
    # Both look at the cmap, which the stored program no longer has.
    "prune_unicode_ranges": False,
    "prune_codepage_ranges": False,
}
# Glyph widths in PDF font dictionaries are in thousandths of an em.
_GLYPH_SPACE = 1000
_MAX_NAME = 48  # PostScript names are at most 63 characters; the subset tag takes 7
_BFCHAR_BATCH = 100  # a CMap's beginbfchar section holds at most 100 entries
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0))


def _is_variation_selector(char: str) -> bool:
    """Whether `char` selects a glyph variant of the character before it."""
    return any(ord(char) in block for block in _VARIATION_SELECTORS)


_TO_UNICODE_HEAD = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
"""
_TO_UNICODE_TAIL = b"""
endcmap
CMapName currentdict /CMapResource defineresource pop
end
end
"""


class _Face(NamedTuple):
    """What build_pdf needs of one TrueType font, read from it once, by `PdfFont`."""

    program: bytes  # the font (a collection's first) with only `_PROGRAM_TABLES`
    name: str  # its PostScript name, cut to letters, digits, `-` and `_`
    gids: Mapping[int, int]  # code point -> glyph id, from the font's best Unicode cmap
    widths: tuple[int, ...]  # advance width of each glyph id, in 1/1000 em
    descriptor: bytes  # the /FontDescriptor's metrics entries
    cap_height: float  # in ems
    space: int  # the glyph ids of " " and "?" (0, .notdef, where the font has none)
    question: int
    ellipsis: tuple[tuple[int, str], ...]  # what ends cut text: glyph ids and their text
    post: tuple[float, int, int, int]  # italic angle, underline position and thickness, fixed


def _parse_font(data: bytes) -> _Face:
    """Read and check a TrueType font (a collection's first font); see `PdfFont`.

    Raises:
        InvalidFont: it is not one, or one that cannot be subset.
    """
    try:
        collection = data[:4] == b"ttcf"
        font = TTFont(
            io.BytesIO(data),
            fontNumber=0 if collection else -1,
            recalcBBoxes=False,
            recalcTimestamp=False,
        )
        face = _read_face(font)
        # Every report subsets the font: one that cannot be subset must fail here, at
        # startup, not in the middle of a report.
        _subset_program(face, [face.question], {})
    except InvalidFont:
        raise
    except Exception as error:
        # fontTools reports a malformed font with anything from struct.error to KeyError.
        raise InvalidFont(
            f"not a readable TrueType font ({type(error).__name__}: {error})"
        ) from error
    return face


def _read_face(font: TTFont) -> _Face:
    """The metrics and the trimmed program of a font fontTools has opened.

    Raises:
        InvalidFont: it has no TrueType outlines or no Unicode cmap.
    """
    if "glyf" not in font or "loca" not in font:
        raise InvalidFont(
            "its outlines are not TrueType (glyf) outlines; OpenType fonts with CFF "
            "outlines (most .otf files) are not supported"
        )
    cmap = font.getBestCmap()
    if not cmap:
        raise InvalidFont("it has no Unicode character map")
    units = int(font["head"].unitsPerEm)
    if not 16 <= units <= 16384:  # noqa: PLR2004 - the OpenType limits
        raise InvalidFont(f"its unitsPerEm ({units}) is outside 16-16384")
    order = font.getGlyphOrder()
    ids = font.getReverseGlyphMap()
    metrics = font["hmtx"].metrics
    scale = _GLYPH_SPACE / units
    widths = tuple(round(metrics[name][0] * scale) for name in order)
    gids = {int(code): int(ids[name]) for code, name in cmap.items()}
    descriptor, cap_height, post = _descriptor(font, scale)
    question = gids.get(ord("?"), 0)
    ellipsis: tuple[tuple[int, str], ...] = ((question, "?"),)
    if ord("\u2026") in gids:
        ellipsis = ((gids[ord("\u2026")], "\u2026"),)
    elif ord(".") in gids:
        ellipsis = ((gids[ord(".")], "."),) * 3
    name = font["name"].getDebugName(6) if "name" in font else None
    name = re.sub(r"[^A-Za-z0-9_-]", "", str(name or ""))[:_MAX_NAME] or "Font"
    for tag in font.keys():  # noqa: SIM118 - keys() is a copy; iterating the font is not
        if tag != "GlyphOrder" and tag not in _PROGRAM_TABLES:
            del font[tag]
    buffer = io.BytesIO()
    font.save(buffer)
    return _Face(
        program=buffer.getvalue(),
        name=name,
        gids=gids,
        widths=widths,
        descriptor=descriptor,
        cap_height=cap_height,
        space=gids.get(ord(" "), 0),
        question=question,
        ellipsis=ellipsis,
        post=post,
    )


def _descriptor(font: TTFont, scale: float) -> tuple[bytes, float, tuple[float, int, int, int]]:
    """The font descriptor's metrics, the cap height in ems, and the post fields to keep."""
    head, hhea = font["head"], font["hhea"]
    os2 = font.get("OS/2")
    post = font.get("post")
    if os2 is not None and os2.version >= 2 and os2.sCapHeight > 0:  # noqa: PLR2004 - OS/2 v2 added it
        cap = int(os2.sCapHeight)
    else:
        # Older fonts (DejaVu's OS/2 is version 1) do not say: measure the H.
        cap = _top_of_h(font) or int(hhea.ascent)
    weight = int(os2.usWeightClass) if os2 is not None else 400
    italic = float(post.italicAngle) if post is not None else 0.0
    fixed = int(post.isFixedPitch) if post is not None else 0
    underline = (
        (int(post.underlinePosition), int(post.underlineThickness)) if post is not None else (0, 0)
    )
    # Symbolic (4): the glyphs are reached by glyph id, not by a standard encoding.
    flags = 4 | (1 if fixed else 0) | (64 if italic else 0)
    # StemV is required but only used by viewers that substitute a missing font, which an
    # embedded one never is: the usual estimate from the weight class will do.
    stem = round(10 + 220 * (weight - 50) / 900)
    box = [round(value * scale) for value in (head.xMin, head.yMin, head.xMax, head.yMax)]
    entries = (
        b"/Flags %d /FontBBox [%d %d %d %d] /ItalicAngle %s /Ascent %d /Descent %d"
        b" /CapHeight %d /StemV %d"
    ) % (
        flags,
        *box,
        _num(italic).encode(),
        round(hhea.ascent * scale),
        round(hhea.descent * scale),
        round(cap * scale),
        stem,
    )
    return entries, cap * scale / _GLYPH_SPACE, (italic, *underline, fixed)


def _top_of_h(font: TTFont) -> int | None:
    """The height of the font's capital H in font units, or None without one."""
    name = font.getBestCmap().get(ord("H"))
    if name is None:
        return None
    glyph = font["glyf"][name]
    top = getattr(glyph, "yMax", None)  # an empty glyph has no bounds
    return int(top) if top else None


def _subset_program(face: _Face, glyphs: Sequence[int], characters: Mapping[int, int]) -> bytes:
    """The face's program with just `glyphs` (and .notdef), each at its own glyph id.

    `characters` (code point -> glyph id) becomes the subset's cmap: viewers reach glyphs
    through /CIDToGIDMap and do not read it, but some font loaders refuse a font without.
    """
    font = TTFont(io.BytesIO(face.program), recalcTimestamp=False)
    subsetter = subset.Subsetter(subset.Options(**_SUBSET_OPTIONS))
    subsetter.populate(gids=[0, *glyphs])
    subsetter.subset(font)
    post = newTable("post")
    post.formatType = 3.0  # no glyph names
    post.italicAngle, post.underlinePosition, post.underlineThickness, post.isFixedPitch = face.post
    post.minMemType42 = post.maxMemType42 = post.minMemType1 = post.maxMemType1 = 0
    font["post"] = post
    order = font.getGlyphOrder()
    names = {code: order[gid] for code, gid in characters.items() if gid < len(order)}
    cmap = newTable("cmap")
    cmap.tableVersion = 0
    cmap.tables = []
    bmp = {code: name for code, name in names.items() if code <= 0xFFFF}  # noqa: PLR2004
    # Windows Unicode: format 4 for the Basic Multilingual Plane, 12 for all of it.
    for format_number, encoding, mapping in ((4, 1, bmp), (12, 10, names)):
        if format_number == 12 and len(bmp) == len(names):  # noqa: PLR2004
            continue
        table = CmapSubtable.newSubtable(format_number)
        table.platformID, table.platEncID, table.language = 3, encoding, 0
        table.cmap = mapping
        cmap.tables.append(table)
    font["cmap"] = cmap
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


@dataclass(slots=True)
class _FaceUse:
    """One face in one report: the glyphs shown, and the text each glyph stands for."""

    face: _Face
    shown: set[int] = field(default_factory=set)
    # The first text each glyph id was drawn for: what the ToUnicode CMap maps it back to.
    # (Two characters on one glyph, such as a space and a no-break space in some fonts,
    # come back as the first.)
    text: dict[int, str] = field(default_factory=dict)


def _glyph_bytes(glyphs: Sequence[int]) -> bytes:
    """Glyph ids as the 2-byte big-endian codes of Identity-H."""
    return struct.pack(f">{len(glyphs)}H", *glyphs)


def _glyph_ids(data: bytes) -> tuple[int, ...]:
    """The glyph ids in Identity-H codes."""
    return struct.unpack(f">{len(data) // 2}H", data)


class _EmbeddedText:
    """Text set in the report's TrueType fonts; `write_fonts` embeds what was shown."""

    __slots__ = ("_faces",)

    def __init__(self, fonts: PdfFonts) -> None:
        regular = _FaceUse(fonts.regular.face)
        # One font for both faces (as when only `font_file` is configured): one subset.
        same = fonts.bold is fonts.regular
        self._faces = {"regular": regular, "bold": regular if same else _FaceUse(fonts.bold.face)}

    def _clusters(self, text: str, use: _FaceUse) -> list[tuple[int, ...]]:
        """`text` as glyph ids, each letter with the combining marks after it.

        Cuts fall between clusters, so that no cut separates a letter from its accents.
        As in `_winansi`, control characters become spaces and invisible format characters
        vanish (a soft hyphen would otherwise show). A variation selector the font lacks
        vanishes too (one it has is an invisible glyph, kept so that the text extracts as
        given). Another character the font lacks is drawn as its compatibility
        decomposition if the font has all of that (`㎏` -> `kg`), else as `?`.
        """
        face = use.face
        gids = face.gids
        seen = use.text
        clusters: list[tuple[int, ...]] = []
        for char in text:
            category = unicodedata.category(char)
            gid = gids.get(ord(char)) if category not in {"Cc", "Cf", "Cs"} else None
            if gid is not None:
                seen.setdefault(gid, char)
                if clusters and unicodedata.combining(char):
                    clusters[-1] += (gid,)
                else:
                    clusters.append((gid,))
            elif category == "Cc":
                seen.setdefault(face.space, " ")
                clusters.append((face.space,))
            elif category != "Cf" and not _is_variation_selector(char):
                clusters.append(self._substitute(char, use))
        return clusters

    @staticmethod
    def _substitute(char: str, use: _FaceUse) -> tuple[int, ...]:
        """Glyphs for a character the font lacks: its decomposition, or `?`."""
        face = use.face
        decomposed = unicodedata.normalize("NFKD", char)
        if decomposed != char:
            found = [face.gids.get(ord(part)) for part in decomposed]
            glyphs = [gid for gid in found if gid is not None]
            if glyphs and len(glyphs) == len(found):
                for gid, part in zip(glyphs, decomposed, strict=True):
                    use.text.setdefault(gid, part)
                return tuple(glyphs)
        use.text.setdefault(face.question, "?")
        return (face.question,)

    def fit(self, text: str, style: _Style, max_width: float) -> bytes:
        """`text` as glyph ids of the style's face, cut to `max_width` points."""
        use = self._faces[style.font]
        clusters = self._clusters(text, use)
        widths = use.face.widths
        room = max_width * _GLYPH_SPACE / style.size
        if sum(widths[gid] for cluster in clusters for gid in cluster) > room:
            clusters = self._cut(clusters, use, room)
        return _glyph_bytes([gid for cluster in clusters for gid in cluster])

    @staticmethod
    def _cut(clusters: list[tuple[int, ...]], use: _FaceUse, room: float) -> list[tuple[int, ...]]:
        """As many clusters as fit in `room` (1/1000 em) with the ellipsis after them."""
        face = use.face
        widths = face.widths
        budget = room - sum(widths[gid] for gid, _ in face.ellipsis)
        used = 0
        kept = 0
        for kept, cluster in enumerate(clusters):  # noqa: B007 - `kept` is the result
            used += sum(widths[gid] for gid in cluster)
            if used > budget:
                break
        head = clusters[:kept]
        while head and head[-1] == (face.space,):
            head.pop()
        for gid, text in face.ellipsis:
            use.text.setdefault(gid, text)
        return [*head, tuple(gid for gid, _ in face.ellipsis)]

    def width(self, data: bytes, style: _Style) -> float:
        """The width in points of glyph-id `data` in `style`."""
        widths = self._faces[style.font].face.widths
        return sum(map(widths.__getitem__, _glyph_ids(data))) * style.size / _GLYPH_SPACE

    def show(self, data: bytes, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw glyph-id `data` at (x, y); its glyphs go into the subset."""
        self._faces[style.font].shown.update(_glyph_ids(data))
        name = _FONTS[style.font][0]
        return b"BT %s %s %s Tf %s %s Td <%s> Tj ET" % (
            style.colour.encode(),
            name.encode(),
            _num(style.size).encode(),
            _num(x).encode(),
            _num(y).encode(),
            data.hex().encode(),
        )

    def show_plain(self, text: str, style: _Style, x: float, y: float) -> bytes:
        """Operators that draw `text` at (x, y), uncut."""
        return self.show(self.fit(text, style, float("inf")), style, x, y)

    def cap_height(self, style: _Style) -> float:
        """The cap height of the style's face (OS/2), in ems."""
        return self._faces[style.font].face.cap_height

    def write_fonts(self, file: _PdfFile) -> None:
        """Write the font objects the pages' font resources name, embedding what was shown.

        A face that showed nothing gets the standard font's dictionary instead: no page
        draws with it, and subsetting a font for nothing would cost 10 ms or more.
        """
        written: dict[int, bytes] = {}
        for face_name, use in self._faces.items():
            number = _FONT_NUMBERS[face_name]
            if not use.shown:
                file.put(number, _CONSTANT_OBJECTS[number])
                continue
            if id(use) not in written:
                written[id(use)] = _type0_font(file, use)
            file.put(number, written[id(use)])


def _type0_font(file: _PdfFile, use: _FaceUse) -> bytes:
    """Write the subset font program and its dictionaries; return the Type0 font's."""
    face = use.face
    glyphs = sorted(use.shown)
    characters = {ord(text): gid for gid, text in use.text.items() if gid in use.shown}
    program = _subset_program(face, glyphs, characters)
    base_font = b"/%s+%s" % (_subset_tag(face, glyphs), face.name.encode())
    program_number = file.add_stream(
        b"/Length1 %d /Filter /FlateDecode" % len(program), (zlib.compress(program),)
    )
    descriptor = file.add(
        b"<< /Type /FontDescriptor /FontName %s %s /FontFile2 %d 0 R >>"
        % (base_font, face.descriptor, program_number)
    )
    cid_font = file.add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont %s"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >>"
        b" /FontDescriptor %d 0 R /DW %d /W %s /CIDToGIDMap /Identity >>"
        % (base_font, descriptor, _GLYPH_SPACE, _widths_array(glyphs, face.widths))
    )
    cmap = _to_unicode(glyphs, use.text)
    to_unicode = file.add_stream(b"/Filter /FlateDecode", (zlib.compress(cmap),))
    return (
        b"<< /Type /Font /Subtype /Type0 /BaseFont %s /Encoding /Identity-H"
        b" /DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (base_font, cid_font, to_unicode)
    )


def _subset_tag(face: _Face, glyphs: Sequence[int]) -> bytes:
    """Six capital letters naming this subset (ISO 32000-1, 9.6.4).

    Taken from the glyphs it holds, so that the same report gives the same bytes, and two
    different subsets of a font almost surely get different names.
    """
    digest = hashlib.sha256(face.name.encode() + _glyph_bytes(glyphs)).digest()
    return bytes(ord("A") + byte % 26 for byte in digest[:6])


def _widths_array(glyphs: Sequence[int], widths: Sequence[int]) -> bytes:
    """A CIDFont's /W array for sorted `glyphs`: one `first [w w ...]` per run of ids."""
    runs: list[bytes] = []
    first = previous = -2
    row: list[bytes] = []
    for gid in glyphs:
        if gid != previous + 1 and row:
            runs.append(b"%d [%s]" % (first, b" ".join(row)))
            row = []
        if not row:
            first = gid
        row.append(b"%d" % widths[gid])
        previous = gid
    if row:
        runs.append(b"%d [%s]" % (first, b" ".join(row)))
    return b"[%s]" % b" ".join(runs)


def _to_unicode(glyphs: Sequence[int], text: Mapping[int, str]) -> bytes:
    """A ToUnicode CMap mapping each of `glyphs` to its text, as UTF-16BE."""
    entries = [
        b"<%04X> <%s>" % (gid, text[gid].encode("utf-16-be").hex().upper().encode())
        for gid in glyphs
        if gid in text
    ]
    sections = [
        b"%d beginbfchar\n%s\nendbfchar"
        % (
            len(entries[start : start + _BFCHAR_BATCH]),
            b"\n".join(entries[start : start + _BFCHAR_BATCH]),
        )
        for start in range(0, len(entries), _BFCHAR_BATCH)
    ]
    return _TO_UNICODE_HEAD + b"\n".join(sections) + _TO_UNICODE_TAIL


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
# What a report with embedded fonts shares with every other: all but the Helvetica fonts.
_SHARED_OBJECTS = {
    number: body
    for number, body in _CONSTANT_OBJECTS.items()
    if number not in _FONT_NUMBERS.values()
}


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


def _section_op(text: _Typesetter, title: str, rect: Rect) -> bytes:
    """A row header's text, vertically centred in its band."""
    style = _Style("bold", min(_SECTION_MAX_SIZE, rect.height * 0.75))
    data = text.fit(title, style, rect.width)
    # Centre the capitals, not the em box.
    baseline = rect.y + (rect.height - style.size * text.cap_height(style)) / 2
    return text.show(data, style, rect.x, baseline)


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
    text: _Typesetter
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
                found = b"\n".join(_header_ops(self.text, self.report, dashboard, page))
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
    text = document.text
    label = f"Page {number + 1}/{document.page_count}"
    ops = [
        document.header(plan.dashboard),
        text.show_plain(label, _PAGE_NUMBER_STYLE, MARGIN, MARGIN + _PAGE_NUMBER_RISE),
    ]
    xobjects: list[tuple[bytes, int]] = []
    if document.logo is not None:
        xobjects.append((b"/Logo", document.logo.number))
        ops.append(document.logo_op)
    for slot, placement in enumerate(plan.placements):
        item = placement.item
        if isinstance(item, SectionTitle):
            ops.append(_section_op(text, item.title, placement.rect))
            continue
        image = document.image(item, dashboard)
        name = b"/Im%d" % slot
        xobjects.append((name, image.number))
        ops.append(_image_op(name, placement.rect.fit(image.width, image.height)))
    if not dashboard.items:
        box = content_box(report, plan.dashboard)
        note = "This dashboard has no panels."
        ops.append(text.show_plain(note, _SMALL_STYLE, box.x, box.top - 10))
    # Left uncompressed: a page's operators are a few hundred bytes, next to the images'
    # hundreds of kilobytes, and compressing them would cost more time than it saves.
    contents = document.file.add_stream(b"", (b"\n".join(ops),))
    return document.file.add(_page_object(document.media_box, xobjects, contents))


def build_pdf(report: PdfReport) -> bytes:
    """The report as PDF bytes, laid out as `plan_pages(report)` says.

    With `report.fonts`, the faces that show text are subset once each, after the last
    page (about 12 ms a face for DejaVu Sans); without, text is Helvetica.

    Raises:
        ValueError: the report has no dashboards, or `grid_width_px` is not positive.
        InvalidImage: a panel's PNG or the logo cannot be read.
    """
    plan = _plan(report)
    # Soft masks need PDF 1.4.
    file = _PdfFile(b"1.4", _FIRST_FREE)
    embedded = None if report.fonts is None else _EmbeddedText(report.fonts)
    # Embedded fonts are written last, when the glyphs are known; Helvetica at once.
    for number, body in (_CONSTANT_OBJECTS if embedded is None else _SHARED_OBJECTS).items():
        file.put(number, body)
    file.put(_INFO, _info(report))
    logo = None
    if report.logo_png:
        try:
            logo = _embed(file, report.logo_png)
        except InvalidImage as error:
            raise InvalidImage(f"logo: {error}") from error
    text: _Typesetter = _STANDARD_TEXT if embedded is None else embedded
    document = _Document(report, file, logo, len(plan), text)
    pages = [_write_page(document, number, page_plan) for number, page_plan in enumerate(plan)]
    if embedded is not None:
        embedded.write_fonts(file)
    file.put(_PAGE_TREE, _page_tree(pages))
    return file.finish(_CATALOG, _INFO)
