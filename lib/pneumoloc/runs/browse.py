"""``pneumoloc browse RUN``: serve a finished run's heatmap browser as a standalone Voila page.

The page is the notebook :data:`APP_NOTEBOOK` shipped inside the package; it reads the run
folder from the environment variable :data:`RUN_ENV`, so it works from any working directory
and without the project's ``notebooks/`` folder.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["APP_NOTEBOOK", "RUN_ENV", "find_run", "voila_command", "serve"]

APP_NOTEBOOK = Path(__file__).with_name("browse_app.ipynb")
RUN_ENV = "PNEUMOLOC_BROWSE_RUN"  # absolute run folder, read by APP_NOTEBOOK


def find_run(run: str) -> Path:
    """A run folder given as a path (from the working directory or the project root) or a run
    name under ``papermill_runs/``; it must hold stored maps (notebook 03)."""
    from ..environment import RUNS_DIR, resolve

    for candidate in (Path(run).expanduser(), resolve(run), RUNS_DIR / run):
        if (candidate / "maps").is_dir():
            return candidate.resolve()
    raise FileNotFoundError(f"{run!r} is not a run folder with stored maps (<run>/maps, written by notebook 03); "
                            f"runs here: {sorted(p.name for p in RUNS_DIR.glob('*/maps'))}")


def voila_command(port: int, ip: str = "127.0.0.1") -> list[str]:
    """The Voila server command for :data:`APP_NOTEBOOK` (no browser opened, one address)."""
    return [sys.executable, "-m", "voila", str(APP_NOTEBOOK), "--no-browser", f"--port={port}",
            f"--Voila.ip={ip}", "--Voila.port_retries=0", "--theme=light"]


def serve(run: str, port: int = 8866, ip: str = "127.0.0.1") -> None:
    """Serve the page for ``run`` until interrupted. This process becomes the Voila server
    (``exec``), so Ctrl-C or a signal to its pid stops the server and its kernels directly."""
    env = {**os.environ, RUN_ENV: str(find_run(run))}
    print(f"pneumoloc browse: {env[RUN_ENV]} at http://{ip}:{port}/ (Ctrl-C stops)", flush=True)
    command = voila_command(port, ip)
    os.execve(command[0], command, env)
