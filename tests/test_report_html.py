"""``relist report --html``: one self-contained page, rendered by headless Chromium
(Debian ``chromium``, scripts/setup.sh --test): the screenshot shows the charts (the
chart colours are on screen, not a blank page) and the console stays silent.  The
PNG is read with zlib alone (no imaging library)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter

import pytest

from relist.core.report.svg import PALETTE
from tests.explain_store import ROOT, build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed "
                                                              "(sh scripts/setup.sh --test)")


def read_png(path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of raw pixels) of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, rows, at = zlib.decompress(b"".join(idat)), w * bpp, bytearray(w * bpp), [], 0
    for _ in range(h):
        f, cur = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        if f == 1:
            for x in range(bpp, stride):
                cur[x] = (cur[x] + cur[x - bpp]) & 0xFF
        elif f == 2:
            cur = bytearray((a + b) & 0xFF for a, b in zip(cur, prev))
        elif f == 3:
            for x in range(stride):
                cur[x] = (cur[x] + (((cur[x - bpp] if x >= bpp else 0) + prev[x]) >> 1)) & 0xFF
        elif f == 4:
            for x in range(stride):
                a, b, c = (cur[x - bpp] if x >= bpp else 0), prev[x], (prev[x - bpp] if x >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(cur))
        prev = cur
    return w, h, bpp, rows


def colours(path) -> Counter:
    """Colour -> pixels, sampled every 2nd pixel of every 2nd row."""
    _, _, bpp, rows = read_png(path)
    out: Counter = Counter()
    for row in rows[::2]:
        for x in range(0, len(row), 2 * bpp):
            out["#" + row[x:x + 3].hex()] += 1
    return out


def render(page, png) -> str:
    """Chromium's screenshot of ``page``; its console messages (stderr lines)."""
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--enable-logging=stderr", "--v=0", f"--screenshot={png}", "--window-size=1000,1400",
                        page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), r.stderr[-2000:]
    return "\n".join(line for line in r.stderr.splitlines() if ":CONSOLE" in line)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("html"))


@needs_chromium
def test_the_console_check_catches_an_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom")</script></body></html>')
    assert '"boom"' in render(page, tmp_path / "bad.png")
    seen = colours(tmp_path / "bad.png")   # and the chart check below fails on a page without charts
    assert sum(seen[c] > 100 for c in PALETTE) == 0 and seen.most_common(1)[0][0] == "#ffffff"


@needs_chromium
def test_html_report_renders_charts_without_console_errors(store, tmp_path):
    page = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "relist", "report", "-c", str(store["conf"]),
                        "--html", str(page)],
                       capture_output=True, text=True, cwd=ROOT, check=True, timeout=120)
    assert r.stdout == "" and "wrote" in r.stderr
    html = page.read_text()
    # Self-contained: no script, and no URL but the SVG namespace.
    assert "<script" not in html.lower()
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in html
    assert html.count("<svg ") == 4 and html.count("<table>") == 4
    for address in ("plain@lists.example.org", "decorated@lists.example.org", "verp@lists.example.org"):
        assert f"<h2>{address}</h2>" in html
    png = tmp_path / "report.png"
    assert render(page, png) == ""
    seen = colours(png)
    assert len(seen) > 20
    # The charts' bars are on screen: at least three palette colours, each in a visible area.
    assert sum(seen[c] > 100 for c in PALETTE) >= 3, seen.most_common(12)


def test_store_values_are_escaped_in_the_page():
    from relist.core.report.aggregate import Aggregator
    from relist.core.report.html import render as render_html
    agg = Aggregator()
    agg.add("R1", "2026-12-01T10:00:00+00:00", "dev@lists.example.org", "<m@x>",
            '{"breakage": ["a/b: <img>"]}', '{"m@x.example": "250 ok", "DATA": "250 ok"}', "250 ok",
            '[{"step": "mode", "action": "recorded", "detail": "resign (x)"}]')
    agg.add_bounce("dev@lists.example.org", "2026-12-01T11:00:00+00:00", "dmarc", "m@<script>.example",
                   "<script>alert(1)</script>")
    page = render_html(agg.result())
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img&gt;" in page
