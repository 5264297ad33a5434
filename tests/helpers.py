"""What several test files share (imported as tests.helpers): test data for the
fetcher, a signing key, and pytest run in a process of its own."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


def run_pytest(*args: str, cwd: Path = REPO, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """pytest with the harness plugin in a process of its own, as a user starts it."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)
