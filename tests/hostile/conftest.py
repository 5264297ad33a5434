"""Fixtures for the hostile-input tests: a folder others may traverse, a runtime
folder of the test's own, throwaway keys and a real sshd (hostile_helpers.py)."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_helpers import SSHD, Sshd, free_port

from harness.seed import keys


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder others may traverse (0711), as /run or /tmp would be: so only the
    harness's own modes decide what another user can reach below it."""
    path = Path(tempfile.mkdtemp(prefix="hostile-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HARNESS_RUNTIME of the test's own (made by the harness itself)."""
    path = shared_tmp / "runtime"
    monkeypatch.setenv("HARNESS_RUNTIME", str(path))
    return path


@pytest.fixture
def run_keys(tmp_path: Path) -> tuple[keys.KeyPair, keys.KeyPair]:
    return (keys.generate(tmp_path / "k", "id_ed25519", "client"),
            keys.generate(tmp_path / "k", "ssh_host_ed25519_key", "host"))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real OpenSSH server on 127.0.0.1 with its own config, port and host key;
    root may log in with the test's client key."""
    if not SSHD.exists():
        pytest.fail("openssh-server is not installed (make deps installs it)")
    d = tmp_path / "sshd"
    d.mkdir()
    client = keys.generate(d, "client", "hostile-test-client")
    host = keys.generate(d, "host_ed25519", "hostile-test-host")
    (d / "authorized_keys").write_text(client.public + "\n")
    server = Sshd(free_port(), d, client, host)
    try:
        yield server.start()
    finally:
        server.stop()


