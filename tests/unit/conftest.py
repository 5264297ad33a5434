"""Shared fixtures for the harness's own fast tests: a real local HTTP server, a
throwaway cache, and retry settings short enough for a unit test."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.images.fetch import Policy
from tools.localserver import LocalServer


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A real HTTP server on 127.0.0.1 whose faults each test queues."""
    with LocalServer() as s:
        yield s


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of the test's own, also for code that reads HARNESS_CACHE."""
    d = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(d))
    return d


@pytest.fixture
def policy() -> Policy:
    """Retries that finish in well under a second."""
    return Policy(attempts=4, backoff=0.01, max_backoff=0.05, connect_timeout=2,
                  read_timeout=0.5)
