"""The report in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4, each message
NUL-terminated JSON), so no port, no websocket library and no driver binary are needed. Each test starts
its own browser with a fresh profile under ``tmp_path`` and kills it afterwards.

What is proved here, on a report built by the real pipeline (log lines -> ``logapm run`` -> store, trace
insights and alerting included):
the page loads with no console message, exception or CSP violation; it makes no network request at all;
every chart is a non-empty SVG with data marks of a visible size; a route named like a script tag is shown
as text and runs nothing. A full-page screenshot is kept under ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _report_fixtures import EVIL_ROUTES, run_pipeline
from conftest import ROOT, unavailable

from aggregator.commands.report import alert_changes
from aggregator.config import load_config
from aggregator.report import write_report

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("headless Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def _above(fd: int, minimum: int = 10) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, minimum)
    os.close(fd)
    return high


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # Move the child's ends above 4, so that placing them on 3 and 4 cannot close one of them.
        cmd_r, res_w = (_above(cmd_r), _above(res_w))
        args = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]
        # The shell puts the pipe ends on fds 3 and 4, where Chromium looks for them.
        script = f'exec "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "bash", *args], pass_fds=(cmd_r, res_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all_events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.all_events.append(msg)
                    self.events.put(msg)
        with self._cond:
            self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no reply to {method}; chromium stderr: {b''.join(self._stderr)[-2000:]!r}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event")
            try:
                msg = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if msg.get("method") == method:
                return msg

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass


class Page:
    """One tab, with everything it logged, threw or fetched collected."""

    def __init__(self, devtools: DevTools) -> None:
        self.dt = devtools
        targets = devtools.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = devtools.send("Target.attachToTarget",
                                     {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.dt.send(method, params, session=self.session)

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.dt.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def events(self, *methods: str) -> list[dict[str, Any]]:
        return [e for e in self.dt.all_events if e.get("method") in methods and e.get("sessionId") == self.session]

    def problems(self) -> list[str]:
        """Console messages, uncaught exceptions, browser log errors, dialogs: none is expected."""
        out = []
        for e in self.events("Runtime.consoleAPICalled"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"])
            out.append(f"console.{e['params']['type']}: {args}")
        for e in self.events("Runtime.exceptionThrown"):
            out.append(f"exception: {e['params']['exceptionDetails']}")
        for e in self.events("Log.entryAdded"):
            entry = e["params"]["entry"]
            if entry["level"] in ("error", "warning"):
                out.append(f"log {entry['level']}: {entry['text']}")
        for e in self.events("Page.javascriptDialogOpening"):
            out.append(f"dialog: {e['params']['message']}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def screenshot(self, path: Path) -> None:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        })
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    devtools = DevTools(tmp_path / "chromium-profile")
    try:
        yield Page(devtools)
    finally:
        devtools.close()


# What the page says about itself: every chart, its kind, its data marks and their drawn size.
_CHART_PROBE = """
(() => {
  const charts = Array.from(document.querySelectorAll("svg.chart")).map(svg => {
    const marks = Array.from(svg.querySelectorAll("[data-mark]"));
    const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
    const box = svg.getBoundingClientRect();
    return {id: svg.id, cls: svg.getAttribute("class"), marks: marks.length, drawn: drawn.length,
            width: box.width, height: box.height};
  });
  return {ready: document.documentElement.getAttribute("data-ready"), charts,
          scripts: document.scripts.length,
          handlers: Array.from(document.querySelectorAll("*")).filter(
              el => Array.from(el.attributes).some(a => a.name.startsWith("on"))).length,
          pwned: window.__pwned || null,
          text: document.body.innerText};
})()
"""


_HOVER_PROBE = """
(() => {
  const svg = document.querySelector("svg.line-chart");
  const area = svg.querySelector(".hover-area");
  const box = area.getBoundingClientRect();
  area.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: box.left + box.width * 0.6,
                                                  clientY: box.top + box.height / 2}));
  const tip = svg.closest("figure").querySelector(".tooltip");
  const button = svg.closest("figure").querySelector("button.legend-item");
  button.click();
  const series = svg.querySelector('.series[data-series="' + button.getAttribute("data-series") + '"]');
  return {tooltip: tip.style.display, text: tip.textContent,
          hidden: getComputedStyle(series).display === "none"};
})()
"""


def test_report_renders_in_headless_chromium(tmp_path: Path, browser: Page) -> None:
    """A report of every kind of event loads with no console error and no network request, every chart
    draws data marks of visible size, a screenshot is kept, and the script works: hovering a chart shows
    the values of that minute, clicking a legend entry hides its line."""
    state, _ = run_pipeline(tmp_path)
    out = tmp_path / "report.html"

    write_report(state, out, config=load_config(environ={}), alerts=alert_changes)
    browser.open(out.as_uri())
    info = browser.evaluate(_CHART_PROBE)
    browser.screenshot(ARTIFACTS / "report.png")

    assert browser.problems() == []
    assert [u for u in browser.requests() if u != out.as_uri()] == []
    assert info["ready"] == "1", "the report's script did not run to the end"
    charts = info["charts"]
    assert len(charts) >= 12
    blank = [c for c in charts if c["marks"] == 0 or c["drawn"] == 0 or c["width"] < 100 or "empty" in c["cls"]]
    assert blank == [], f"charts drew nothing: {blank}"
    assert (ARTIFACTS / "report.png").stat().st_size > 20_000

    # The script works: hovering a line chart shows its values, a legend entry hides its line.
    hover = browser.evaluate(_HOVER_PROBE)
    assert hover["tooltip"] == "block" and "p95:" in hover["text"] and "UTC" in hover["text"]
    assert hover["hidden"] is True
    assert browser.problems() == []


def test_hostile_route_names_show_as_text_and_run_nothing(tmp_path: Path, browser: Page) -> None:
    """Routes, query text, service and task names that look like markup or script, written in log lines
    and carried through parsing, aggregation and the insights, are shown literally: no script runs, no
    dialog opens, no element gains an event handler, and the page shows the strings."""
    state, _ = run_pipeline(tmp_path, routes=EVIL_ROUTES)
    out = tmp_path / "evil.html"

    write_report(state, out, config=load_config(environ={}), alerts=alert_changes)
    browser.open(out.as_uri())
    info = browser.evaluate(_CHART_PROBE)
    browser.screenshot(ARTIFACTS / "report-hostile.png")

    assert browser.problems() == []
    assert info["pwned"] is None
    assert info["scripts"] == 2  # the JSON block and the report's own script
    assert info["handlers"] == 0
    for route in EVIL_ROUTES:
        assert route in info["text"], route
