"""The demo's report in a real browser: headless Chromium (Debian's package) loads it, every
figure of the report decodes and shows, the summary page opens, and nothing logs an error.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ended by a NUL byte on file descriptors 3 and 4), so the test needs no driver library.
The test installs ``chromium`` with apt-get where it is missing (and leaves it installed: nothing
else notices it), and is skipped, with the reason, where it cannot be installed.
"""

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.browser]

#: Seconds to wait for one answer of the browser.
TIMEOUT = 120


def chromium() -> str:
    """The chromium executable, installed with apt-get if missing; skips where it cannot be."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Waits up to 10 minutes for dpkg's lock: another test may be installing.
    cmd = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600", "install",
           "--no-install-recommends", "chromium"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        update = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", "update"]
        subprocess.run(update, capture_output=True, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"apt-get could not install chromium: {proc.stderr.strip()[-300:]}")
    return shutil.which("chromium")


class Browser:
    """One headless Chromium page, driven over the DevTools protocol on a pipe."""

    def __init__(self, executable: str, profile: Path):
        to_chrome, self._to = os.pipe()
        self._from, from_chrome = os.pipe()
        cmd = (
            f"exec {executable} --headless=new --no-sandbox --disable-gpu --no-first-run "
            f"--disable-extensions --user-data-dir={profile} --remote-debugging-pipe "
            f"about:blank 3<&{to_chrome} 4>&{from_chrome}"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", cmd], pass_fds=(to_chrome, from_chrome),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=True)

    def _message(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._from], [], [], timeout)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(TIMEOUT)
            if reply.get("id") == self._id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        end = time.monotonic() + TIMEOUT
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._message(max(end - time.monotonic(), 0.1)))

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def run(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=True,
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", str(params)))
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(" ".join(str(a.get("value", a)) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


#: Decodes an image data URI in the page: its width in pixels, -1 if it does not decode.
DECODE = """uri => new Promise(done => { const image = new Image();
    image.onload = () => done(image.naturalWidth); image.onerror = () => done(-1);
    image.src = uri; })"""


#: Waits (up to 10 s) until an element matching ``selector`` is in the page (React renders the
#: report's views after the call that asks for them returns): true if it came, false if not.
WAIT_FOR = """new Promise(done => {{ const end = Date.now() + 10000; const look = () => {{
    if (document.querySelector('{selector}') !== null) done(true);
    else if (Date.now() > end) done(false); else setTimeout(look, 50); }}; look(); }})"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    page = Browser(chromium(), tmp_path_factory.mktemp("chromium"))
    yield page
    page.close()


def test_the_report_shows_every_figure_without_errors(demo_run, browser):
    browser.open((demo_run / "report.html").resolve().as_uri())
    plots = demo_run / "results" / "demo" / "plots"
    images = {p.relative_to(demo_run).as_posix() for p in plots.glob("*.png")}
    pages = {p.relative_to(demo_run).as_posix() for p in plots.glob("*.html")}
    pages.add("results/demo/summary.html")
    assert browser.run("Object.keys(results).sort()") == sorted(images | pages)
    # It opens on the menu, in reading order with the summary first, and a text that points there.
    menu = browser.run("document.querySelector('#app').innerText")
    positions = [menu.index(c) for c in ("1. Summary", "2. Maps", "3. Brainscores by layer",
                                         "4. Shape of representations")]  # fmt: skip
    assert positions == sorted(positions)
    assert "Start with 1. Summary" in menu
    # The report's own view of each figure: it decodes, and shows in the content pane.
    widths = browser.run(f"""(async () => {{ const decode = {DECODE}; const out = {{}};
        for (const [path, r] of Object.entries(results)) if (r.mime_type === 'image/png') {{
            app.setView({{content: 'img', contentPath: r.data_uri}});
            const isShown = () => [...document.querySelectorAll('#app img')].some(
                image => image.src === r.data_uri && image.complete && image.naturalWidth > 0);
            const end = Date.now() + 10000;
            while (!isShown() && Date.now() < end) await new Promise(d => setTimeout(d, 50));
            const shown = isShown();
            out[path] = [await decode(r.data_uri), shown];
        }} return out; }})()""")  # fmt: skip
    assert set(widths) == images
    for path, (width, shown) in widths.items():
        assert width > 100 and shown, path
    assert browser.errors() == []


def test_the_summary_page_opens_in_the_report_and_alone(demo_run, browser):
    browser.open((demo_run / "report.html").resolve().as_uri())
    browser.run("app.showCategory('1. Summary')")
    browser.run("app.setView({content: 'html', contentPath: "
                "results['results/demo/summary.html'].data_uri})")  # fmt: skip
    assert browser.run(WAIT_FOR.format(selector="#app iframe"))
    browser.open((demo_run / "results" / "demo" / "summary.html").resolve().as_uri())
    text = browser.run("document.body.innerText")
    assert "What was run" in text and "Leaderboard" in text
    rows = browser.run("document.querySelectorAll('table tbody tr').length")
    assert rows == len((demo_run / "results" / "demo" / "leaderboard.tsv").read_text()
                       .splitlines()) - 1  # fmt: skip
    widths = browser.run(f"""(async () => {{ const decode = {DECODE};
        return Promise.all([...document.images].map(i => decode(i.src))); }})()""")
    assert len(widths) == 3 and min(widths) > 100  # scaling, contrasts, regressions
    assert browser.errors() == []
