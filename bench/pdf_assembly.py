"""Benchmark of `sidecar.pdf.build_pdf` against img2pdf and a plain byte copy.

Run as `python bench/pdf_assembly.py [N ...]` (default N = 50 and 200). It draws N distinct
synthetic Grafana-like panels of two kinds at device scale 2 and saves them as RGB PNGs as a
browser screenshot would be (zlib level 6, adaptive filters, and IDAT in 4 KB chunks like
the Chromium screenshots that grafana-image-renderer returns), and measures three sets:

* busy: 2000 x 1000 px, dark theme, grid lines, three to five noisy series, labels
  (about 66 KB each);
* busy, one IDAT chunk: the same PNGs with their IDAT in one chunk, as Pillow writes it
  (what this bench measured before it split IDAT as Chromium does). The direct path writes
  one part per chunk, so this is the cheaper case;
* sparse: 2000 x 800 px, one flat series on a grid, shaped and sized like the real
  scale-2 render `shared/fixtures/renders/render-prometheus-dsolo.png` (about 32 KB, as it
  is). Less data per panel makes the fixed cost per panel weigh more: this is the worst
  case for the ratio to the byte copy.

Then it times, in this one process (median after one warm-up, `gc.collect()` outside the
timing):

* `build_pdf` of a two-panels-per-row grid report of those PNGs;
* `b"".join(pngs)`, the floor: any PDF holding the PNG data must at least copy it once;
* `img2pdf.convert` of the same PNGs (one image per page, no text: less work than ours;
  busy panels only, as it takes seconds).

The first two take a millisecond or so, where a shared VM's noise is large: they run 25
times each, alternately, so that a slow spell of the machine hits both and not just one
side of their ratio. img2pdf runs 5 times.

Targets (reference/pdf-performance.md): build_pdf <= img2pdf / 20, build_pdf <= 5x the
byte copy, peak memory of build_pdf under 2x the PDF size + 100 MB.

Peak memory is measured twice: tracemalloc's peak (Python allocations only, in this
process) and, in a fresh spawned process holding just the inputs, how far one build raises
VmHWM after resetting it through /proc/self/clear_refs (everything, C allocations too;
Linux only, otherwise reported as None).

Other scripts can import `make_panels`, `make_sparse_panels`, `measure` and `peak_memory`.
"""

from __future__ import annotations

import gc
import io
import math
import multiprocessing
import random
import statistics
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import img2pdf
from PIL import Image, ImageDraw

from sidecar.model import GridPos
from sidecar.pdf import DashboardPdf, PanelImage, PdfReport, build_pdf

PANEL_SIZE = (2000, 1000)  # a 12 x 8 grid panel at device scale 2 (about 1000 x 500 CSS px)
SPARSE_PANEL_SIZE = (2000, 800)  # render-prometheus-dsolo.png: 1000 x 400 CSS px at scale 2
BACKGROUND = (24, 27, 31)  # Grafana dark theme panel background #181b1f
TEXT = (204, 204, 220)
GRID = (46, 49, 54)
BADGE = (17, 18, 23)
SERIES = [(115, 191, 105), (242, 204, 12), (87, 148, 242), (255, 120, 10), (242, 73, 92)]
RUNS = 5
FAST_RUNS = 25
MEGABYTE = 1024 * 1024
TARGET_IMG2PDF = 1 / 20
TARGET_COPY = 5.0
MEMORY_ALLOWANCE = 100 * MEGABYTE
# Chromium's PNG encoder, behind every grafana-image-renderer screenshot, writes IDAT in
# 4096-byte chunks (see the fixtures); Pillow writes up to 64 KB. The chunks cannot be
# joined without copying, so each is one more part of the PDF: the bench keeps them.
RENDERER_IDAT_CHUNK = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, body: bytes | memoryview) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", crc)


def with_idat_chunks(png: bytes, chunk: int = RENDERER_IDAT_CHUNK) -> bytes:
    """`png` with its IDAT data split into `chunk`-byte chunks (by default as Chromium)."""
    head: list[bytes] = []
    idat: list[bytes] = []
    tail: list[bytes] = []
    position = len(PNG_SIGNATURE)
    while position < len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        whole = png[position : position + 12 + length]
        if kind == b"IDAT":
            idat.append(whole[8:-4])
        else:
            (tail if idat else head).append(whole)
        position += 12 + length
    data = memoryview(b"".join(idat))
    chunks = [_png_chunk(b"IDAT", data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join([PNG_SIGNATURE, *head, *chunks, *tail])


def make_panel(index: int, size: tuple[int, int] = PANEL_SIZE) -> bytes:
    """One distinct time-series panel: title, axes, grid, 3 noisy series, legend."""
    rng = random.Random(index)  # noqa: S311 - reproducible drawing, not security
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((24, 16), f"Panel {index}: requests per second by instance", fill=TEXT, font_size=28)
    left, top, right, bottom = 110, 70, width - 30, height - 110
    for step in range(11):
        y = top + (bottom - top) * step / 10
        draw.line([(left, y), (right, y)], fill=GRID, width=2)
        draw.text((20, y - 12), f"{(10 - step) * rng.randint(5, 50)}", fill=TEXT, font_size=20)
    for step in range(13):
        x = left + (right - left) * step / 12
        draw.line([(x, top), (x, bottom)], fill=GRID, width=2)
        draw.text((x - 30, bottom + 10), f"{step * 2:02d}:00", fill=TEXT, font_size=20)
    for series, colour in enumerate(SERIES[: 3 + index % 3]):
        level = rng.uniform(0.2, 0.8)
        points = []
        for x in range(left, right, 4):
            level = min(
                max(level + rng.gauss(0, 0.02) + 0.01 * math.sin(x / 90 + series), 0.0), 1.0
            )
            points.append((x, bottom - level * (bottom - top)))
        draw.line(points, fill=colour, width=3)
        legend_x = left + series * 260
        draw.rectangle([legend_x, height - 50, legend_x + 30, height - 40], fill=colour)
        draw.text(
            (legend_x + 40, height - 60), f"instance-{index}-{series}", fill=TEXT, font_size=22
        )
    return _saved(image)


def make_sparse_panel(index: int, size: tuple[int, int] = SPARSE_PANEL_SIZE) -> bytes:
    """One distinct quiet panel like render-prometheus-dsolo.png: one flat series on a grid."""
    rng = random.Random(index)  # noqa: S311 - reproducible drawing, not security
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((12, 10), f"Prometheus: {index}", fill=TEXT, font_size=26)
    draw.rounded_rectangle([width - 180, 10, width - 10, 46], 4, fill=BADGE, outline=GRID)
    draw.text((width - 168, 18), "Powered by Grafana", fill=TEXT, font_size=18)
    left, top, right, bottom = 44, 56, width - 12, height - 66
    for step in range(21):
        y = top + (bottom - top) * step / 20
        draw.line([(left, y), (right, y)], fill=GRID, width=2)
        draw.text((4, y - 12), f"{(20 - step) / 10:g}", fill=TEXT, font_size=20)
    level = bottom - (bottom - top) * rng.uniform(0.2, 0.8)
    for step in range(37):
        x = left + (right - left) * step / 36
        draw.line([(x, top), (x, bottom)], fill=GRID, width=2)
        label = f"{5 + step // 12:02d}:{step % 12 * 5:02d}"
        draw.text((x - 20, bottom + 8), label, fill=TEXT, font_size=16)
        draw.ellipse([x - 3, level - 3, x + 3, level + 3], fill=SERIES[0])
    draw.line([(left, level), (right, level)], fill=SERIES[0], width=2)
    draw.rectangle([12, height - 24, 30, height - 20], fill=SERIES[0])
    draw.text((38, height - 30), f"{index}", fill=TEXT, font_size=20)
    return _saved(image)


def _saved(image: Image.Image) -> bytes:
    """`image` as the PNG a browser screenshot would be."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # zlib level 6, adaptive filters: what a browser sends
    return with_idat_chunks(buffer.getvalue())


def make_panels(count: int) -> list[bytes]:
    """`count` distinct busy panel PNGs."""
    return [make_panel(index) for index in range(count)]


def make_sparse_panels(count: int) -> list[bytes]:
    """`count` distinct sparse panel PNGs, sized like the real scale-2 render."""
    return [make_sparse_panel(index) for index in range(count)]


def report_for(pngs: Sequence[bytes]) -> PdfReport:
    """A landscape grid report with the panels two per row."""
    items = [
        PanelImage(png, GridPos(12 * (i % 2), 8 * (i // 2), 12, 8), f"Panel {i}")
        for i, png in enumerate(pngs)
    ]
    dashboard = DashboardPdf("Benchmark", "2026-11-19 10:00 to 2026-11-26 10:00", items)
    return PdfReport("Benchmark report", [dashboard], generated="2026-11-26 10:00 UTC")


def median_seconds(run: Callable[[], object], runs: int = RUNS) -> float:
    """Median wall time of `run` over `runs` runs after one warm-up; GC outside timing."""
    run()
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(runs: dict[str, Callable[[], object]], count: int) -> dict[str, float]:
    """Median wall time of each function over `count` rounds that run each once, in turn.

    One warm-up round first; `gc.collect()` before every run, outside the timing.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(count):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status (VmHWM, VmRSS) in bytes, or None off Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def _reset_vm_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux's clear_refs value 5); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _vm_hwm_growth_of_build(pngs: Sequence[bytes]) -> int | None:
    """In a fresh process: how far one build_pdf raises the peak RSS above the inputs."""
    report = report_for(pngs)
    gc.collect()
    baseline = _status_bytes("VmRSS")
    if baseline is None or not _reset_vm_hwm():
        return None
    pdf = build_pdf(report)
    peak = _status_bytes("VmHWM")
    del pdf
    return None if peak is None else peak - baseline


def peak_memory(pngs: Sequence[bytes]) -> dict[str, int | None]:
    """Peak memory of one build_pdf of `pngs`, in bytes.

    `tracemalloc_peak`: Python allocations, measured here. `vm_hwm_growth`: resident memory
    of everything (C allocations too), measured in a fresh spawned process, because in
    this one earlier runs leave freed memory that the build would reuse without growing.
    """
    report = report_for(pngs)
    gc.collect()
    tracemalloc.start()
    try:
        build_pdf(report)
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        growth = pool.submit(_vm_hwm_growth_of_build, list(pngs)).result()
    return {"tracemalloc_peak": traced, "vm_hwm_growth": growth}


def measure(pngs: Sequence[bytes], *, with_img2pdf: bool = True) -> dict[str, Any]:
    """Times (seconds), sizes (bytes) and peak memory of build_pdf on `pngs`, with baselines."""
    report = report_for(pngs)
    pdf = build_pdf(report)
    result: dict[str, Any] = {
        "panels": len(pngs),
        "png_bytes": sum(map(len, pngs)),
        "pdf_bytes": len(pdf),
    }
    del pdf
    medians = interleaved_medians(
        {"build_pdf_s": lambda: build_pdf(report), "byte_copy_s": lambda: b"".join(pngs)},
        FAST_RUNS,
    )
    result.update(medians)
    if with_img2pdf:
        result["img2pdf_s"] = median_seconds(lambda: img2pdf.convert(list(pngs)))
    result.update(peak_memory(pngs))
    return result


def _mb(value: float | None) -> str:
    """Bytes as MB text."""
    return "n/a" if value is None else f"{value / MEGABYTE:.1f} MB"


def print_result(result: dict[str, Any]) -> None:
    """Print one measurement with its ratios against the targets."""
    count = result["panels"]
    ours = result["build_pdf_s"]
    copy = result["byte_copy_s"]
    print(f"\nN={count}: PNG input {_mb(result['png_bytes'])}, PDF {_mb(result['pdf_bytes'])}")
    print(f"  build_pdf        {ours * 1000:9.1f} ms  ({ours * 1000 / count:.2f} ms/panel)")
    if "img2pdf_s" in result:
        theirs = result["img2pdf_s"]
        ratio = ours / theirs
        verdict = "ok" if ratio <= TARGET_IMG2PDF else "MISSED"
        print(f"  img2pdf.convert  {theirs * 1000:9.1f} ms  ({theirs * 1000 / count:.2f} ms/panel)")
        print(f"  build_pdf / img2pdf    = 1/{1 / ratio:.0f}  (target <= 1/20: {verdict})")
    print(f"  b''.join(pngs)   {copy * 1000:9.1f} ms")
    verdict = "ok" if ours / copy <= TARGET_COPY else "MISSED"
    print(f"  build_pdf / byte copy  = {ours / copy:.1f}x  (target <= 5x: {verdict})")
    print(f"  PDF size / PNG bytes   = {result['pdf_bytes'] / result['png_bytes']:.3f}")
    limit = 2 * result["pdf_bytes"] + MEMORY_ALLOWANCE
    for key, label in (("tracemalloc_peak", "tracemalloc peak"), ("vm_hwm_growth", "VmHWM growth")):
        value = result[key]
        verdict = "n/a" if value is None else ("ok" if value <= limit else "MISSED")
        target = f"target < 2 x PDF + 100 MB = {_mb(limit)}: {verdict}"
        print(f"  {label:17s} {_mb(value):>10s}  ({target})")


def print_summary(results: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """One table of every measurement: time per panel and the ratio to the byte copy."""
    print("\n| panels | N | PNG KB/panel | build_pdf | per panel | b''.join | ratio (<= 5) |")
    print("|---|---|---|---|---|---|---|")
    for name, result in results:
        count = result["panels"]
        ours = result["build_pdf_s"]
        copy = result["byte_copy_s"]
        print(
            f"| {name} | {count} | {result['png_bytes'] / count / 1000:.0f} "
            f"| {ours * 1000:.2f} ms | {ours * 1e6 / count:.1f} us | {copy * 1000:.2f} ms "
            f"| {ours / copy:.1f}x |"
        )


def main(argv: Sequence[str]) -> None:
    """Measure every panel set for each N given (default 50 and 200) and print the results."""
    counts = [int(arg) for arg in argv] or [50, 200]
    most = max(counts)
    start = time.perf_counter()
    busy = make_panels(most)
    sparse = make_sparse_panels(most)
    elapsed = time.perf_counter() - start
    print(f"drew {most} busy and {most} sparse panels in {elapsed:.1f} s")
    # name: (PNGs, whether to time img2pdf too)
    panel_sets = {
        f"busy {PANEL_SIZE[0]}x{PANEL_SIZE[1]}": (busy, True),
        # The same images with IDAT in one chunk, as Pillow writes it: what this bench
        # measured before it split IDAT as Chromium does. Fewer chunks, fewer parts to write.
        "busy, one IDAT chunk": ([with_idat_chunks(png, len(png)) for png in busy], False),
        f"sparse {SPARSE_PANEL_SIZE[0]}x{SPARSE_PANEL_SIZE[1]}": (sparse, False),
    }
    summary: list[tuple[str, dict[str, Any]]] = []
    for name, (pngs, with_img2pdf) in panel_sets.items():
        mean = sum(map(len, pngs)) / len(pngs) / 1000
        print(f"\n{name}: {mean:.0f} KB per panel on average")
        for count in counts:
            result = measure(pngs[:count], with_img2pdf=with_img2pdf)
            print_result(result)
            summary.append((name, result))
    print_summary(summary)


if __name__ == "__main__":
    main(sys.argv[1:])
