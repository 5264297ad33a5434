"""Shared fixtures for the harness's own fast tests: a real local HTTP server, a
throwaway cache, retry settings short enough for a unit test, and a GPG key made
for the tests."""

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import catalog
from harness.catalog import Distro
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


class Signer:
    """A GPG key made for the tests (never a vendor's): signs as Flatcar and CoreOS do."""

    def __init__(self, home: Path):
        self.home = home
        self.key = home.parent / "test-signing-key.asc"

    def gpg(self, *args: str, data: bytes = b"") -> bytes:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes",
                               "--pinentry-mode", "loopback", "--passphrase", "", *args],
                              input=data, capture_output=True, check=True).stdout

    def clearsign(self, text: str) -> str:
        """As Flatcar's .DIGESTS.asc: the checksum file, clearsigned."""
        return self.gpg("--clearsign", data=text.encode()).decode()

    def detached(self, data: bytes) -> bytes:
        """As CoreOS's .sig: a binary detached signature of the file itself."""
        return self.gpg("--detach-sign", data=data)


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


def bootable(size: int = 64 * 1024, seed: int = 1) -> bytes:
    """Bytes that pass for a raw disk: varied content and an MBR boot signature."""
    out, block = bytearray(), str(seed).encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    out[510:512] = b"\x55\xaa"
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
