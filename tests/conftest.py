"""Shared fixtures for the harness's own fast tests: a real local HTTP server, a
throwaway cache, retry settings short enough for a unit test, and a GPG key made
for the tests."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import catalog
from harness.catalog import Distro
from harness.images.fetch import Policy
from tests.helpers import Signer
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


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    """A throwaway ed25519 signing key in a GNUPGHOME of its own; its agent is stopped."""
    home = tmp_path_factory.mktemp("gpg") / "home"
    home.mkdir(mode=0o700)
    s = Signer(home)
    s.gpg("--quick-gen-key", "Harness Test Signer <signer@test.invalid>", "ed25519",
          "sign", "1d")
    s.key.write_bytes(s.gpg("--armor", "--export"))
    yield s
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)


TINY = """
[tiny]
title = "Tiny 1.0 (a test distro served from 127.0.0.1)"
family = "test"
unverified = ["boot: never booted"]
[tiny.image]
env = "HARNESS_IMAGE_TINY"
{image}
[tiny.boot]
firmware = "bios"
memory_mib = 512
ssh_user = "root"
seed = "none"
[tiny.promises]
docker = "manual"
init = "systemd"
update = "none"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Callable[[str], Distro]:
    """A catalog entry `tiny` whose [image] table is the given TOML lines."""
    def make(image: str) -> Distro:
        p = tmp_path / "tiny-catalog.toml"
        p.write_text(TINY.format(image=image))
        return catalog.load(p)["tiny"]
    return make
