"""The report in a real browser: headless Debian chromium, driven over the Chrome DevTools Protocol.

Checks what a reader's browser does with the file: no console errors, no network request of any kind (only the
file itself and its data: images load), the key sections are in the rendered DOM, untrusted text stays text,
and a screenshot of the first screen is not blank. CI installs chromium with apt; elsewhere the test skips.

The DevTools websocket is spoken with the ~60 lines of RFC 6455 below (text frames to and from 127.0.0.1), so
the test needs no websocket package.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nplus.report import Options, build_report
from tests.test_report import XSS_IMG, XSS_SCRIPT, make_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,1600",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
TIMEOUT = 30.0

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="chromium is not installed (Debian: apt-get install -y chromium)"
    ),
    pytest.mark.slow,
]  # make test-fast leaves it out: a headless browser per test


# ------------------------------------------------------------------------------- a minimal websocket client


class WebSocket:
    """Just enough RFC 6455 for DevTools on localhost: masked text frames out, unmasked frames in."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            buf += chunk
        return buf

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = struct.pack("!B", 0x80 | opcode)
        head += (
            struct.pack("!B", 0x80 | n)
            if n < 126
            else (struct.pack("!BH", 0x80 | 126, n) if n < 65536 else struct.pack("!BQ", 0x80 | 127, n))
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            n = (
                struct.unpack("!H", self._exact(2))[0]
                if n == 126
                else struct.unpack("!Q", self._exact(8))[0]
                if n == 127
                else n
            )
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping → pong
                self._frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            message += payload
            if b0 & 0x80:  # FIN: the (possibly fragmented) message is complete
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class DevTools:
    """Commands with ids; every event that arrives meanwhile is kept in ``events``."""

    def __init__(self, ws: WebSocket):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = TIMEOUT) -> dict:
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))
        return next(e for e in self.events if e.get("method") == method)

    def of(self, method: str) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == method]


def _devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    """Chromium writes its chosen port (``--remote-debugging-port=0``) to DevToolsActivePort in the profile."""
    marker = profile / "DevToolsActivePort"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def _page_websocket(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never through a proxy
    targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT).read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")


DOM_PROBE = """JSON.stringify({
  title: document.title,
  sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent.trim()),
  images: [...document.images].map(i => ({scheme: i.src.split(':')[0], loaded: i.complete && i.naturalWidth > 0,
                                           width: i.naturalWidth})),
  scripts: document.scripts.length,
  handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,
  iframes: document.querySelectorAll('iframe,object,embed').length,
  verdictRows: document.querySelectorAll('#verdict-table tbody tr').length,
  tocLinks: [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href')),
  figureNumbers: [...document.querySelectorAll('figure figcaption strong')].map(s => s.textContent.trim()),
  figures: [...document.querySelectorAll('figure')].map(f => ({id: f.id, width: f.querySelector('img').naturalWidth,
    height: f.querySelector('img').naturalHeight, text: f.innerText})),
  legends: [...document.querySelectorAll('figure ul.legend-key li')].map(li => ({
    figure: li.closest('figure').id, label: li.dataset.label, color: li.dataset.color,
    drawn: getComputedStyle(li.querySelector('.swatch')).backgroundColor})),
  answer: [...document.querySelectorAll('#answer p')].map(p => p.textContent.trim()),
  text: document.body.innerText,
})"""


def render_in_chromium(index: Path, workdir: Path) -> dict:
    """Load the file headless; returns the DevTools events, a DOM probe and the screenshot path."""
    profile = workdir / "profile"
    log = open(workdir / "chromium.log", "w")
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        ws = WebSocket(_page_websocket(_devtools_port(profile, proc)))
        cdp = DevTools(ws)
        for domain in ("Network", "Runtime", "Log", "Page"):
            cdp.call(f"{domain}.enable")
        cdp.events.clear()  # about:blank's own events are not the report's
        cdp.call("Page.navigate", url=index.resolve().as_uri())
        cdp.wait_for("Page.loadEventFired")
        dom = json.loads(cdp.call("Runtime.evaluate", expression=DOM_PROBE, returnByValue=True)["result"]["value"])
        shot = cdp.call("Page.captureScreenshot", format="png")
        if os.environ.get("NPLUS_SCREENSHOTS"):  # keep every page's first screen for a reader to look at
            keep = Path(os.environ["NPLUS_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{index.parent.name}.png").write_bytes(base64.b64decode(shot["data"]))
        screenshot = workdir / "screenshot.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.close()
        return {"events": cdp, "dom": dom, "screenshot": screenshot, "uri": index.resolve().as_uri()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    root = make_study(tmp / "study", seeds=(1, 2), inject=True, failed=("no_eos_penalty", 2))
    index = build_report(root, tmp / "report", Options(formats=("png",)))
    return {**render_in_chromium(index, tmp), "html": index.read_text()}


# ------------------------------------------------------------------------------------------------- tests


def test_no_network_requests(rendered):
    urls = [p["request"]["url"] for p in rendered["events"].of("Network.requestWillBeSent")]
    assert urls, "the page load itself was not observed"
    # Self-contained: the only thing fetched is the file itself (images are data: URIs, never files or hosts).
    others = [u for u in urls if u != rendered["uri"] and urlparse(u).scheme != "data"]
    assert others == [], others
    assert rendered["events"].of("Network.webSocketCreated") == []


def test_no_console_errors(rendered):
    cdp = rendered["events"]
    assert cdp.of("Runtime.exceptionThrown") == []
    assert [c for c in cdp.of("Runtime.consoleAPICalled") if c.get("type") in ("error", "assert", "warning")] == []
    assert [e["entry"] for e in cdp.of("Log.entryAdded") if e["entry"].get("level") in ("error", "warning")] == []
    assert cdp.of("Page.javascriptDialogOpening") == []


def test_key_sections_rendered(rendered):
    dom = rendered["dom"]
    for section in (
        "headline",
        "glossary",
        "effects",
        "training",
        "overoptimization",
        "samples",
        "sanity",
        "provenance",
    ):
        assert section in dom["sections"] and f"#{section}" in dom["tocLinks"]
    assert dom["verdictRows"] >= 4  # the baseline row and three variants
    assert len(dom["images"]) >= 4 and all(
        i["scheme"] == "data" and i["loaded"] and i["width"] > 300 for i in dom["images"]
    )
    assert "no_eos_penalty/seed=2" in dom["text"]  # the failed run is shown, not hidden


def test_screenshot_is_not_blank(rendered):
    from matplotlib import image

    shot = rendered["screenshot"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    pixels = image.imread(shot)
    assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not a blank page


def test_untrusted_text_stays_text(rendered):
    html, dom = rendered["html"], rendered["dom"]
    assert XSS_SCRIPT not in html and XSS_IMG not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # In the browser: the strings are visible as text, and created no element (the page has no script at all).
    assert XSS_SCRIPT in dom["text"] and XSS_IMG in dom["text"]
    assert dom["scripts"] == 0 and dom["handlers"] == 0 and dom["iframes"] == 0
    assert all(i["scheme"] == "data" for i in dom["images"])


COMMITTED = sorted(p.parent.name for p in (Path(__file__).resolve().parents[1] / "reports").glob("*/index.html"))


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_report_opens_offline_without_errors(name, tmp_path):
    """Every published report under reports/: loads with no request beyond its own file, no console error, and
    every figure decoded."""
    index = Path(__file__).resolve().parents[1] / "reports" / name / "index.html"
    page = render_in_chromium(index, tmp_path)
    cdp = page["events"]
    urls = [p["request"]["url"] for p in cdp.of("Network.requestWillBeSent")]
    assert urls and [u for u in urls if u != page["uri"] and urlparse(u).scheme != "data"] == []
    assert cdp.of("Runtime.exceptionThrown") == []
    assert [e["entry"] for e in cdp.of("Log.entryAdded") if e["entry"].get("level") in ("error", "warning")] == []
    images = page["dom"]["images"]
    assert images and all(i["scheme"] == "data" and i["loaded"] for i in images)


ANSWER = re.compile(
    r"^(On (gold score|PPO win rate)|No variant|Scaling \(|Over-optimized:|No run over-optimized|"
    r"PPO over its SFT policy|⚠ \d+ of \d+ runs failed a sanity check)"
)


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_report_reads_right_at_a_glance(name, tmp_path):
    """What a reader sees first, in every committed report: a headline that states the study's answer, figures
    numbered in the order they appear, none of them empty, and each variant in one colour in every figure."""
    index = Path(__file__).resolve().parents[1] / "reports" / name / "index.html"
    dom = render_in_chromium(index, tmp_path)["dom"]
    assert dom["answer"] and any(ANSWER.match(s) for s in dom["answer"]), dom["answer"]
    numbers = [int(re.match(r"Figure (\d+)\.", t).group(1)) for t in dom["figureNumbers"]]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert dom["figures"] and all(
        f["width"] > 300 and f["height"] > 150 and "not available" not in f["text"] for f in dom["figures"]
    )
    colours: dict[str, set] = {}
    for entry in dom["legends"]:
        assert entry["drawn"] == _rgb(entry["color"]), entry  # the swatch shows the colour the legend lists
        colours.setdefault(entry["label"].split(" [")[0], set()).add(entry["color"])
    assert colours and all(len(c) == 1 for c in colours.values()), {k: c for k, c in colours.items() if len(c) > 1}
    assert "scaling" in dom["sections"] or not re.search(r"Scaling \(", " ".join(dom["answer"]))
