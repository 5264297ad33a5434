"""Where the harness keeps things: one cache for built and fetched images, one
runtime directory for what a run creates and must remove again."""

import os
from pathlib import Path

from harness import settings

APP = "container-os-harness"
REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Images and other reusable results; survives runs, never inside the repository."""
    if configured := settings.get("HARNESS_CACHE"):
        return configured
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / APP


def runtime_dir() -> Path:
    """Per-run files (keys, console logs, locks); `harness clean` sweeps it."""
    if configured := settings.get("HARNESS_RUNTIME"):
        return configured
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"{APP}-{os.getuid()}"
