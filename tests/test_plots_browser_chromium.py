"""The heatmap browser in a real browser: Chromium driven by Playwright, in JupyterLab (notebook
03 run through the UI) and in the Voila page of ``pneumoloc browse``.

Every control is changed once; each change must bring a new image into the page (the time is
printed) and leave the page's control values equal to the kernel's ``MapBrowser.state()``.
Skipped, with the reason printed, without Chromium, Playwright or Voila.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

import page_driver as pd_
from pneumoloc.environment import NOTEBOOKS_DIR

# Decided at collection, so a machine without Chromium skips before building the tiny run.
SKIP_REASON = pd_.skip_reason()
pytestmark = [pytest.mark.notebooks, pytest.mark.browser, pytest.mark.xdist_group("notebooks"),
              pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=pd_.chromium_path())
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def run_copy(chromium, tiny_run, tmp_path_factory):
    """A temp copy of the tiny run (the dataset it points at stays where the tiny run wrote it)."""
    root, manifest = tiny_run
    assert manifest["status"] == "ok", manifest["stages"]
    tmp = tmp_path_factory.mktemp("browse")
    shutil.copytree(root / "run", tmp / "run")
    return tmp / "run", next(s for s in manifest["stages"] if s["name"] == "03_gradcam_gallery")["parameters"]


def _server_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    lib = str(Path(__file__).resolve().parents[1] / "lib")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def lab(run_copy, tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, rooted in a temp folder holding notebook 03 with its
    parameters set for the run copy (papermill parameterizes it, nothing executes it)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    run, parameters = run_copy
    tmp = tmp_path_factory.mktemp("lab")
    nb = load_notebook_node(str(NOTEBOOKS_DIR / "03_gradcam_gallery.ipynb"))
    parameters = {**parameters, "run_dir": str(run), "figures_dir": str(tmp / "figures"), "sanity_n_images": 0,
                  "device": "cpu"}
    nbformat.write(parameterize_notebook(nb, parameters), tmp / "03_gradcam_gallery.ipynb")
    port, token = pd_.free_port(), secrets.token_hex(16)
    for d in ("config", "data", "runtime", "workspaces"):
        (tmp / d).mkdir()
    news = tmp / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news toast
    server = pd_.Server(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--allow-root", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
         f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        f"http://127.0.0.1:{port}/api/status?token={token}", tmp / "lab.log", cwd=tmp,
        env=_server_env(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime")))
    yield f"http://127.0.0.1:{port}", token, tmp
    server.stop()


@pytest.fixture(scope="module")
def voila(run_copy, tmp_path_factory):
    """``pneumoloc browse RUN --port P`` started from an empty folder that is also the project
    root: the page needs the run folder only, not notebooks/."""
    run, _ = run_copy
    tmp = tmp_path_factory.mktemp("voila")
    port = pd_.free_port()
    server = pd_.Server([sys.executable, "-m", "pneumoloc.cli", "browse", str(run), "--port", str(port)],
                        f"http://127.0.0.1:{port}/voila/static/", tmp / "voila.log", cwd=tmp,
                        env=_server_env(PNEUMOLOC_ROOT=str(tmp)))
    yield f"http://127.0.0.1:{port}/"
    server.stop()


def _screenshot(page, path: Path) -> None:
    """The browser widget whole (the page may scroll inside a container), else the viewport."""
    browser = page.locator(".pneumoloc-browser")
    if browser.count():
        browser.first.screenshot(path=path)
    else:
        page.screenshot(path=path)


@contextlib.contextmanager
def watched_page(chromium, tmp_path, name):
    """A page at device pixel ratio 2; its final screenshot is saved in ``tmp_path`` (and named
    in the error when the test fails); console errors fail the test."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=2)
    page = context.new_page()
    watch = pd_.PageWatch(page)
    shot = tmp_path / f"{name}.png"
    try:
        yield page, watch
    except BaseException as e:
        with contextlib.suppress(Exception):
            _screenshot(page, shot)
        e.add_note(f"screenshot of the page: {shot}\nconsole errors: {watch.errors}")
        raise
    else:
        _screenshot(page, shot)
        print(f"{name}: final screenshot {shot}")
    finally:
        if watch.external:
            print(f"{name}: requests outside 127.0.0.1 answered empty (offline): {sorted(set(watch.external))}")
        context.close()
    unexpected = [e for e in watch.errors if not any(known in e for known in getattr(watch, "expected", ()))]
    assert not unexpected, f"JavaScript console errors: {unexpected}"


def exercise_every_control(bp: pd_.BrowserPage, name: str) -> dict:
    """Change each control once (the tiny run: resnet18 and mobilenet_v3, gradcam and gradcam++
    among the methods); returns the final kernel state."""
    st = bp.wait_consistent("loading")
    dom = bp.controls()
    assert {"level", "versus"} <= set(st["disabled"]), "contour off and compare off disable level and versus"
    first = st["controls"]["backbone"]
    other = next(o for o in dom["backbone"]["options"] if o != first)
    bp.change("backbone", bp.select("backbone", other))
    bp.change("method", bp.select("method", "gradcam++"))
    if bp.kernel_state()["controls"]["backbone"] != "resnet18":  # its maps are nonzero: contour has a level set
        bp.change("backbone (back)", bp.select("backbone", "resnet18"))
    counts = {}
    for outcome in ("TP", "FN"):  # the outcomes with boxes
        bp.change(f"outcome {outcome}", bp.toggle("outcome", outcome))
        counts[outcome] = bp.kernel_state()["n_cases"]
    best = max(counts, key=counts.get)
    assert counts[best] >= 2, f"the tiny run needs two positives of one outcome, got {counts}"
    if bp.kernel_state()["controls"]["outcome"] != best:
        bp.change(f"outcome {best}", bp.toggle("outcome", best))
    bp.change("sort", bp.select("sort by", "localization (worst first)"))
    bp.change("case slider", bp.step("case"))
    assert bp.kernel_state()["controls"]["case"] == 1
    bp.change("opacity", bp.step("opacity"))
    assert bp.kernel_state()["opacity"] == pytest.approx(0.55)
    assert "boxes" not in bp.kernel_state()["disabled"], "positives have boxes"
    bp.change("boxes", bp.check("boxes"))
    bp.change("lung mask", bp.check("lung mask"))
    bp.change("contour", bp.check("contour"))
    assert "level" not in bp.kernel_state()["disabled"]
    bp.change("level", bp.step("level"))
    bp.change("compare method", bp.toggle("compare", "method"))
    st = bp.kernel_state()
    assert "versus" not in st["disabled"] and len(st["panels"]) == 2
    versus = bp.controls()["versus"]["options"]
    assert len(versus) >= 2, f"the tiny run stores several methods for resnet18: {versus}"
    bp.change("versus", bp.select("versus", versus[1]))
    assert bp.kernel_state()["panels"][1] == ["resnet18", versus[1]]
    bp.change("compare backbone", bp.toggle("compare", "backbone"))
    assert [p[0] for p in bp.kernel_state()["panels"]] == ["resnet18", "mobilenet_v3"]
    bp.change("compare off", bp.toggle("compare", "off"))
    st = bp.wait_consistent("the end")
    assert "versus" in st["disabled"] and len(st["panels"]) == 1
    image = bp.image()
    assert image["ratio"] == 2 and abs(image["natural"] - image["css"] * image["ratio"]) <= 2, \
        f"the PNG is drawn at the shown size times the device pixel ratio: {image}"
    print(f"\n{name}: control -> new image latency (s)")
    for label, seconds in bp.latencies:
        print(f"  {label:<18} {seconds:.3f}")
    worst = max(s for _, s in bp.latencies)
    print(f"  worst {worst:.3f} s over {len(bp.latencies)} changes")
    return st


# JupyterLab's debugger sidebar asks the kernel for its state; a kernel restart cancels that
# request, and JupyterLab logs the cancellation as a console error.
RESTART_CONSOLE_ERRORS = ("Could not restore the debugger state",)


def run_all_cells(page, attempts: int = 3) -> bool:
    """Run all cells until one visibly finishes (a prompt shows an execution count ``[n]``).

    Opening a notebook can start two kernels and shut one down while the page is already
    connected to it (``lab.log`` then shows two "Kernel started" and one "Kernel shutdown"):
    run requests sent to it are queued (``[*]``) and never answered. So the check waits for a
    finished cell, not a queued one, and a retry restarts the kernel through the Kernel menu
    ("Restart Kernel and Run All Cells"), which reconnects the page to a live kernel; nothing
    has run yet, so running again is safe. Returns whether the kernel was restarted.
    """
    finished = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt')]
                       .some(p => /\\[\\d+\\]/.test(p.textContent))"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        if attempt == 0:
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        else:
            page.locator(".lm-MenuBar-item", has_text="Kernel").first.click()
            page.get_by_role("menuitem", name="Restart Kernel and Run All Cells…", exact=True).click()
            page.locator(".jp-Dialog").get_by_role("button", name="Confirm Kernel Restart", exact=True).click()
        try:
            page.wait_for_function(finished, timeout=90_000)
            return attempt > 0
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def test_jupyterlab_notebook_03(chromium, lab, tmp_path):
    url, token, _ = lab
    with watched_page(chromium, tmp_path, "jupyterlab") as (page, watch):
        page.goto(f"{url}/lab/tree/03_gradcam_gallery.ipynb?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)
        if run_all_cells(page):
            watch.expected = RESTART_CONSOLE_ERRORS
        page.wait_for_selector("img.pneumoloc-image", state="attached", timeout=300_000)
        page.locator("img.pneumoloc-image").scroll_into_view_if_needed()
        bp = pd_.BrowserPage(page)
        exercise_every_control(bp, "jupyterlab")
        assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']") \
            .filter(has_text="Error").count(), "a notebook cell failed"


def test_voila_page(chromium, voila, tmp_path):
    with watched_page(chromium, tmp_path, "voila") as (page, watch):
        page.goto(voila)
        page.wait_for_selector("img.pneumoloc-image", timeout=180_000)
        headline = page.locator("table").first.inner_text()
        assert "resnet18" in headline and "ROC-AUC" in headline and "hit rate" in headline
        assert "chance" in headline, "chance baselines beside the models"
        exercise_every_control(pd_.BrowserPage(page), "voila")
