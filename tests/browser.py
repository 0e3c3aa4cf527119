"""Headless Chromium for tests, driven through the DevTools protocol over a pipe.

No Selenium, no websocket package, nothing downloaded: Debian's ``chromium`` is started with
``--remote-debugging-pipe`` and the CDP JSON messages (NUL-terminated) go through file
descriptors 3 (commands to the browser) and 4 (replies and events). The helper loads a local
HTML file, collects console errors and uncaught exceptions, finds the rendered figures
(``<img>``, ``<svg>``, ``<canvas>`` of at least :data:`MIN_FIGURE_PX` on each side), measures
each one's pixel variance and ink from a screenshot of its box, checks tables, and writes
screenshots for a person to look at. :func:`walk_snakemake_report` clicks through a
Snakemake report (menu -> category -> subcategory -> each result's eye button) and records
every result it displays.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the flags the project uses (no network, no first-run UI, a throw-away profile)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
MIN_FIGURE_PX = 48  # smaller <svg>/<img> are icons, not figures
IMAGE_MIMES = ("image/svg+xml", "image/png", "image/jpeg", "image/gif")


class BrowserUnavailable(RuntimeError):
    """No Chromium here, or it would not start (tests skip with this message)."""


class BrowserError(RuntimeError):
    """A DevTools command failed or timed out."""


def find_chromium() -> str | None:
    env = os.environ.get("KAPPAFLOW_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high_fd(fd: int) -> int:
    """Duplicate ``fd`` to a number >= 10 (so the 3</4> redirections of bash cannot clash)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Browser:
    """One headless Chromium process; ``with Browser() as b: page = b.new_page()``."""

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1400,
        height: int = 1000,
        timeout: float = 60.0,
    ):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserUnavailable(
                f"no Chromium found (looked for {', '.join(CANDIDATES)} on PATH and "
                "$KAPPAFLOW_CHROMIUM); install Debian's chromium: apt-get install chromium"
            )
        self.width, self.height, self.timeout = width, height, timeout
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._closed = False

    # ------------------------------------------------------------------ process
    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="kappaflow-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        to_browser_r, from_browser_w = _high_fd(to_browser_r), _high_fd(from_browser_w)
        flags = [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={self.width},{self.height}",
            "--remote-debugging-pipe",
            "--hide-scrollbars",
            "about:blank",
        ]
        cmd = (
            f"exec {shlex.quote(self.executable)} {' '.join(map(shlex.quote, flags))} "
            f"3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-"
        )
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", cmd],
                pass_fds=(to_browser_r, from_browser_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.stderr,
            )
        except OSError as exc:
            raise BrowserUnavailable(f"cannot start {self.executable}: {exc}") from exc
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._write = os.fdopen(to_browser_w, "wb", buffering=0)
        self._read = os.fdopen(from_browser_r, "rb", buffering=0)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=30)
        except BrowserError as exc:
            self.close()
            raise BrowserUnavailable(f"{self.executable} did not answer: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.send("Browser.close", timeout=5)
        except (BrowserError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for f in (self._write, self._read):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def stderr_tail(self, n: int = 2000) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-n:]

    # ------------------------------------------------------------------ protocol
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._read.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed_pipe = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        """One CDP command; its result (raises :class:`BrowserError` on an error reply)."""
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self, "_closed_pipe", False):
                    raise BrowserError(f"{method}: no reply within {timeout or self.timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self) -> list[dict]:
        """Every event received since the last call."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        return Page(self, session)


@dataclass
class FigureCheck:
    """One rendered figure: its tag, size on the page (CSS px) and pixel statistics."""

    kind: str
    index: int
    width: float
    height: float
    variance: float  # variance of the grey level (0..1 scale) over the figure's box
    ink: float  # fraction of pixels that differ from the box's most common colour
    src: str = ""

    @property
    def blank(self) -> bool:
        return self.variance < 1e-4 or self.ink < 0.005


@dataclass
class PageCheck:
    url: str
    console_errors: list[str]
    figures: list[FigureCheck]
    tables: dict[str, bool]
    screenshot: Path | None = None


@dataclass
class Page:
    """One tab (a flattened CDP session)."""

    browser: Browser
    session: str
    console_errors: list[str] = field(default_factory=list)
    _loaded: bool = False

    def send(self, method: str, params: dict | None = None, timeout: float | None = None):
        result = self.browser.send(method, params, self.session, timeout)
        self._drain()
        return result

    def _drain(self) -> None:
        for ev in self.browser.events():
            if ev.get("sessionId") != self.session:
                continue
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
                )
                self.console_errors.append(f"console.{p['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                text = d.get("exception", {}).get("description") or d.get("text", "")
                self.console_errors.append(f"uncaught: {text}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                self.console_errors.append(f"log.{e.get('source')}: {e.get('text')}")
            elif method == "Page.loadEventFired":
                self._loaded = True

    def open(self, path_or_url: str | Path, timeout: float = 60.0) -> None:
        """Load a local file (or URL) and wait for its load event and two animation frames."""
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        width, height = self.browser.width, self.browser.height
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        url = str(path_or_url)
        if "://" not in url:
            url = Path(url).resolve().as_uri()
        self._loaded = False
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url}: no load event within {timeout} s")
            time.sleep(0.05)
            self._drain()
        self.settle()
        self.url = url

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression (promises awaited)."""
        r = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(d.get("exception", {}).get("description") or d.get("text"))
        return r.get("result", {}).get("value")

    def settle(self, frames: int = 2) -> None:
        """Wait until pending images decode and ``frames`` animation frames have passed."""
        self.evaluate(
            "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
            f".then(() => new Promise(r => {{ let n = {frames}; const f = () => "
            "(--n > 0 ? requestAnimationFrame(f) : r(true)); requestAnimationFrame(f); }))"
        )

    def screenshot(self, clip: dict | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def click_at(self, x: float, y: float) -> None:
        """A real mouse click (hit-tested by the browser) at page viewport coordinates."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})  # fmt: skip
        self.settle()

    def click(self, js_element: str) -> None:
        """Scroll the element given by a JS expression into view and click its centre."""
        rect = self.evaluate(
            f"(() => {{ const el = {js_element}; if (!el) return null; "
            "el.scrollIntoView({block: 'center', inline: 'center'}); "
            "const r = el.getBoundingClientRect(); "
            "return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height}; })()"
        )
        if not rect or rect["w"] == 0 or rect["h"] == 0:
            raise BrowserError(f"nothing visible to click: {js_element}")
        self.click_at(rect["x"], rect["y"])


# ---------------------------------------------------------------------- checks

FIGURES_JS = f"""(() => {{
  const min = {MIN_FIGURE_PX};
  const els = [...document.querySelectorAll('img, svg, canvas')]
    .filter(el => !(el.tagName.toLowerCase() === 'svg' && el.parentElement.closest('svg')));
  return els.map((el, i) => {{
    const r = el.getBoundingClientRect();
    const st = getComputedStyle(el);
    return {{kind: el.tagName.toLowerCase(), i, x: r.x + scrollX, y: r.y + scrollY,
             w: r.width, h: r.height,
             visible: st.visibility !== 'hidden' && st.display !== 'none' && r.width > 0,
             ok: el.tagName.toLowerCase() !== 'img' || (el.complete && el.naturalWidth > 0),
             src: (el.currentSrc || el.getAttribute('src') || '').slice(0, 200)}};
  }}).filter(f => f.visible && f.w >= min && f.h >= min);
}})()"""


def pixel_stats(png: bytes) -> tuple[float, float]:
    """(variance of the grey level, fraction of pixels unlike the most common colour)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3].astype(float)
    grey = img.mean(axis=2)
    flat = (img.reshape(-1, 3) * 255).round().astype(int)
    keys = flat[:, 0] * 65536 + flat[:, 1] * 256 + flat[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    background = values[np.argmax(counts)]
    return float(grey.var()), float(np.mean(keys != background))


def measure_figures(page: Page) -> list[FigureCheck]:
    """Every figure-sized img/svg/canvas on the page, with pixel statistics of its box."""
    out = []
    for f in page.evaluate(FIGURES_JS) or []:
        page.evaluate(f"window.scrollTo(0, {max(0.0, f['y'] - 20)})")
        clip = {"x": f["x"], "y": f["y"], "width": f["w"], "height": f["h"]}
        var, ink = pixel_stats(page.screenshot(clip))
        if not f["ok"]:  # a broken <img> renders nothing of its own
            var, ink = 0.0, 0.0
        out.append(FigureCheck(f["kind"], f["i"], f["w"], f["h"], var, ink, f["src"]))
    page.evaluate("window.scrollTo(0, 0)")
    return out


def tables_present(page: Page, tables: dict[str, list[str]]) -> dict[str, bool]:
    """name -> whether some <table> on the page contains every one of the given strings."""
    texts = page.evaluate("[...document.querySelectorAll('table')].map(t => t.innerText)") or []
    return {
        name: any(all(s in t for s in needles) for t in texts) for name, needles in tables.items()
    }


def check_page(
    page: Page, tables: dict[str, list[str]] | None = None, screenshot: Path | None = None
) -> PageCheck:
    """Console errors so far, figures with pixel statistics, tables, a full screenshot."""
    figures = measure_figures(page)
    found = tables_present(page, tables or {})
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(page.screenshot())
    page._drain()
    return PageCheck(page.url, list(page.console_errors), figures, found, screenshot)


# ---------------------------------------------------------------------- Snakemake reports


@dataclass
class ReportResult:
    path: str
    mime_type: str
    shown: str  # "image" (displayed in the content pane), "link" (download button), ""
    figure: FigureCheck | None = None


def report_registry(page: Page) -> dict[str, dict]:
    """The report's own registry: ``results`` (path -> name, mime type, labels, caption,
    data URI) and ``categories`` (category -> subcategory -> paths)."""
    return page.evaluate(
        "({results: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, "
        "{name: v.name, mime_type: v.mime_type, labels: v.labels || null, caption: v.caption, "
        "data_uri: v.data_uri}])), categories: categories})"
    )


def report_label_problems(registry: dict) -> list[str]:
    """Results a Snakemake report cannot show, predicted from its registry the way the
    report's JavaScript lays out a subcategory (``AbstractResults.getData``): with two or
    more labels, a later label with exactly two values, each on half of the results, becomes
    a toggle; a row (the other labels' values) lacking one of the toggle's values has no
    result to show and the report's React tree crashes (TypeError reading 'mime_type')."""
    problems = []
    results = registry["results"]
    for category, subcats in registry["categories"].items():
        for sub, paths in subcats.items():
            entries = [results[p].get("labels") for p in paths]
            if not entries or not all(entries):
                continue
            order: dict[str, int] = {}
            for lab in entries:
                for i, key in enumerate(lab):
                    order.setdefault(key, i)
            labels = sorted(order, key=order.get)
            toggles = {}
            for label in labels[1:]:
                values = [lab[label] for lab in entries if label in lab]
                unique = sorted(set(values))
                if len(unique) == 2 and all(values.count(v) * 2 == len(entries) for v in unique):
                    toggles[label] = unique
            if len(toggles) != 1:
                continue
            ((label, values),) = toggles.items()
            others = [k for k in labels if k != label]
            rows: dict[tuple, set] = {}
            for lab in entries:
                rows.setdefault(tuple(lab.get(k, "") for k in others), set()).add(lab.get(label))
            for key, have in rows.items():
                for missing in sorted(set(values) - have):
                    row = dict(zip(others, key, strict=True))
                    problems.append(
                        f"{category} / {sub}: label {label!r} becomes a toggle "
                        f"({' / '.join(values)}), but the row {row} has no result for "
                        f"{missing!r}: the report crashes when this list is shown"
                    )
    return problems


MENU_ITEM_JS = "[...document.querySelectorAll('nav li a')].find(a => a.innerText.trim() === {text})"
CONTENT_IMG_JS = "document.querySelector('div.grow.h-screen img')"


def walk_snakemake_report(page: Page, screenshots: Path | None = None) -> list[ReportResult]:
    """Click through every category and subcategory of a loaded Snakemake report; click the
    eye button of every listed result. An image result must then appear as the content
    pane's <img> with that result's data URI (measured like any figure); a table result is
    a download link carrying its data URI. Returns one entry per result found in the UI."""
    reg = report_registry(page)
    by_uri = {v["data_uri"]: k for k, v in reg["results"].items()}
    categories = reg["categories"]
    seen: dict[str, ReportResult] = {}
    for category in sorted(categories):
        subcats = sorted(categories[category])
        for sub in subcats:
            page.click("document.querySelector('nav nav ol li a')")  # breadcrumb: home/menu
            single = len(categories) == 1
            label = "Results" if single else category
            page.click(MENU_ITEM_JS.format(text=json.dumps(label)))
            if len(subcats) > 1:
                page.click(MENU_ITEM_JS.format(text=json.dumps(sub)))
            n_rows = page.evaluate("document.querySelectorAll('nav table tbody tr').length")
            for row in range(n_rows):
                button = (
                    f"document.querySelectorAll('nav table tbody tr')[{row}]"
                    ".querySelector('td:last-child a')"
                )
                href = page.evaluate(f"{button}.getAttribute('href')")
                if href and href in by_uri:  # a download link: a table or other file
                    path = by_uri[href]
                    seen[path] = ReportResult(path, reg["results"][path]["mime_type"], "link")
                    continue
                page.click(button)
                src = page.evaluate(f"{CONTENT_IMG_JS}?.getAttribute('src') || ''")
                path = by_uri.get(src)
                if path is None:
                    continue
                figure = next(
                    (f for f in measure_figures(page) if f.kind == "img" and src.startswith(f.src)),
                    None,
                )
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    name = path.replace("/", "_")
                    (screenshots / f"{name}.png").write_bytes(page.screenshot())
                seen[path] = ReportResult(path, reg["results"][path]["mime_type"], "image", figure)
    return list(seen.values())


def report_csv(entry: dict):
    """A CSV result of a report (its embedded data URI) as a DataFrame."""
    import pandas as pd

    data = entry["data_uri"].split("base64,", 1)[1]
    return pd.read_csv(io.StringIO(base64.b64decode(data).decode()))


def assert_report_ok(report_html: Path, browser: Browser, shots: Path) -> dict:
    """A Snakemake report, checked in the browser: no label layout it cannot draw, no console
    error while clicking through every category; every registered figure displayed with real
    content (not blank) and a screenshot under ``shots``; every result reachable and
    captioned (what it shows, how to read it); the metrics table present. The figures
    expected come from the report's own registry. Returns the registry's results."""
    page = browser.new_page()
    page.open(report_html)
    registry = report_registry(page)
    results = registry["results"]
    images = {p for p, v in results.items() if v["mime_type"] in IMAGE_MIMES}
    assert images, "the report registers no figure"
    problems = report_label_problems(registry)
    assert problems == [], "report labels Snakemake cannot lay out:\n" + "\n".join(problems)
    shown = {r.path: r for r in walk_snakemake_report(page, shots)}
    check = check_page(page, screenshot=shots / "report-last-view.png")
    assert check.console_errors == [], "the report logged errors:\n" + "\n".join(
        e[:400] for e in check.console_errors
    )
    displayed = {p for p, r in shown.items() if r.shown == "image"}
    assert displayed == images, (
        f"registered figures not displayed by clicking through the report: "
        f"{sorted(images - displayed)}; results reached: {sorted(shown)}"
    )
    for path in sorted(images):
        figure = shown[path].figure
        assert figure is not None, f"{path}: no <img> measured in the content pane"
        assert figure.width >= 200 and figure.height >= 150, (path, figure)
        assert not figure.blank, (path, figure)
        assert (shots / f"{path.replace('/', '_')}.png").is_file()
    assert set(shown) == set(results), f"unreachable: {sorted(set(results) - set(shown))}"
    for path, entry in results.items():
        words = len(entry["caption"].replace("<p>", " ").split())
        assert words >= 8, f"{path}: caption too short ({words} words)"
    assert "results/metrics.csv" in results
    summary = report_csv(results["results/metrics.csv"])
    assert {"model", "n_materials", "mean_SRME", "mean_SRE", "n_failed"} <= set(summary.columns)
    return results
