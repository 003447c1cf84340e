"""Drive a MapBrowser shown in a real page (JupyterLab or Voila) with Playwright.

Controls are found by their CSS class ``pneumoloc-<description>``; the kernel's
``MapBrowser.state()`` is read from the hidden ``pneumoloc-state`` HTML widget, which also
carries the SHA-256 of the PNG the kernel last drew.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# DOM value, disabled flag and kind of every control, keyed by its description.
READ_CONTROLS = """() => {
  const out = {};
  for (const el of document.querySelectorAll('.pneumoloc-browser [class*="pneumoloc-"]')) {
    const name = [...el.classList].find(c => c.startsWith('pneumoloc-')).slice(10).replace(/-/g, ' ');
    if (['image', 'notes', 'state', 'browser'].includes(name)) continue;
    const select = el.querySelector('select'), box = el.querySelector('input[type=checkbox]');
    const slider = el.querySelector('.slider'), buttons = el.querySelectorAll('button');
    if (select) out[name] = {kind: 'dropdown', value: select.value, disabled: select.disabled,
                             options: [...select.options].map(o => o.value)};
    else if (box) out[name] = {kind: 'checkbox', value: box.checked, disabled: box.disabled};
    else if (slider) out[name] = {kind: 'slider', value: parseFloat(el.querySelector('.widget-readout').textContent),
                                  disabled: slider.hasAttribute('disabled')};
    else if (buttons.length) out[name] = {kind: 'toggle', disabled: [...buttons].every(b => b.disabled),
        value: ([...buttons].find(b => b.classList.contains('mod-active')) || {dataset: {}}).dataset.value};
  }
  return out;
}"""

IMAGE_DIGEST = """async () => {
  const img = document.querySelector('img.pneumoloc-image');
  const bytes = await (await fetch(img.src)).arrayBuffer();
  const hash = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(hash)].map(b => b.toString(16).padStart(2, '0')).join('');
}"""

NEW_IMAGE = """old => { const img = document.querySelector('img.pneumoloc-image');
  return img && img.src !== old && img.complete && img.naturalWidth > 0; }"""


def chromium_path() -> str | None:
    """Debian's Chromium (``PNEUMOLOC_CHROMIUM`` overrides); Playwright's own download is not used."""
    found = os.environ.get("PNEUMOLOC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and Path(found).exists() else None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for module in ("playwright.sync_api", "voila", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"browser tests skipped: python package {module.split('.')[0]!r} is not installed"
    if chromium_path() is None:
        return "browser tests skipped: no Chromium (apt-get install -y chromium, or set PNEUMOLOC_CHROMIUM)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own session, waited for on ``probe_url`` and stopped by its pid."""

    def __init__(self, command: list[str], probe_url: str, log: Path, timeout: float = 120, **popen):
        import urllib.error
        import urllib.request

        self.log = log
        self.proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True, **popen)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(probe_url, timeout=5)
                return
            except urllib.error.HTTPError:  # it answers
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start: {command}\n{log.read_text()[-3000:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the server's process group (it and its kernels), SIGKILL after 15 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # kernels still alive after their server exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class PageWatch:
    """Console errors and uncaught exceptions of a page; requests leaving 127.0.0.1 are answered
    empty (the test machine is offline: Voila's template links a CDN stylesheet) and listed."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.external: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text} at {m.location}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.route(lambda url: not url.startswith("http://127.0.0.1"), self._offline)

    def _offline(self, route) -> None:
        self.external.append(route.request.url)
        route.fulfill(status=200, body="", content_type="text/css" if ".css" in route.request.url else "text/plain")


class BrowserPage:
    """One MapBrowser in a page: read its controls and the kernel's state, change a control and
    time how long the page takes to show the new image."""

    def __init__(self, page, timeout: float = 30.0):
        self.page, self.timeout = page, timeout
        self.latencies: list[tuple[str, float]] = []

    def controls(self) -> dict:
        return self.page.evaluate(READ_CONTROLS)

    def kernel_state(self) -> dict:
        text = self.page.locator(".pneumoloc-state").first.text_content()
        return json.loads(text)

    def image(self) -> dict:
        return self.page.evaluate("""() => { const i = document.querySelector('img.pneumoloc-image');
            return {src: i.src, natural: i.naturalWidth, css: i.getBoundingClientRect().width,
                    ratio: window.devicePixelRatio}; }""")

    def control(self, name: str):
        return self.page.locator(f".pneumoloc-{name.replace(' ', '-')}").first

    def change(self, label: str, action) -> float:
        """Run ``action`` (one user gesture), wait for a new image, check that page and kernel
        agree; returns (and records) the seconds from the gesture to the new image."""
        old = self.image()["src"]
        start = time.perf_counter()
        action()
        try:
            self.page.wait_for_function(NEW_IMAGE, arg=old, timeout=self.timeout * 1000)
        except Exception as e:  # playwright's TimeoutError
            raise AssertionError(f"{label}: the page showed no new image within {self.timeout:.0f} s") from e
        seconds = time.perf_counter() - start
        self.latencies.append((label, seconds))
        self.wait_consistent(label)
        return seconds

    def wait_consistent(self, label: str) -> dict:
        """Wait until the kernel's state describes the PNG the page shows and matches every
        control's DOM value and disabled flag; returns the state."""
        deadline = time.monotonic() + self.timeout
        while True:
            state, dom, digest = self.kernel_state(), self.controls(), self.page.evaluate(IMAGE_DIGEST)
            problems = mismatches(state, dom) + ([] if state["png_sha256"] == digest else
                                                ["the page shows another PNG than the kernel drew last"])
            if not problems:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"after {label}: page and MapBrowser.state() disagree: {problems}")
            time.sleep(0.2)

    # --- gestures ---------------------------------------------------------------------
    def select(self, name: str, option: str):
        return lambda: self.control(name).locator("select").select_option(value=option)

    def toggle(self, name: str, option: str):
        return lambda: self.control(name).locator(f'button[data-value="{option}"]').click()

    def check(self, name: str):
        return lambda: self.control(name).locator("input").click()

    def step(self, name: str, key: str = "ArrowRight"):
        return lambda: self.control(name).locator(".noUi-handle").press(key)


def mismatches(state: dict, dom: dict) -> list[str]:
    """Differences between the kernel's control values / disabled set and the page's."""
    out = []
    values = state["controls"]
    if set(values) != set(dom):
        return [f"controls {sorted(values)} in the kernel, {sorted(dom)} in the page"]
    for name, value in values.items():
        shown = dom[name]["value"]
        if name == "versus" and value == "":
            same = shown.startswith("(")  # the placeholder shown while there is nothing to compare
        elif isinstance(value, float):
            same = abs(shown - value) < 5e-3
        else:
            same = shown == value
        if not same:
            out.append(f"{name}: kernel {value!r}, page {shown!r}")
    disabled = sorted(n for n, c in dom.items() if c["disabled"])
    if disabled != state["disabled"]:
        out.append(f"disabled: kernel {state['disabled']}, page {disabled}")
    return out
