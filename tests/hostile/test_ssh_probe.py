"""The readiness probe and the login share one connection: under emulation each
connection makes the guest's sshd start a process of its own, which costs
seconds. Against a real OpenSSH server on 127.0.0.1 that logs every connection."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_helpers import Sshd, free_port

from harness.seed import Media, keys
from harness.vm import ssh

CONNECTION = re.compile(r"Connection from 127\.0\.0\.1 port (\d+)")


@pytest.fixture
def logged_sshd(sshd: Sshd, tmp_path: Path) -> Iterator[Sshd]:
    sshd.log = tmp_path / "sshd.log"
    yield sshd.start()


def _connections(sshd: Sshd, after: int) -> list[int]:
    """Source ports of the connections sshd accepted after `after` bytes of its log."""
    return [int(p) for p in CONNECTION.findall(sshd.log.read_text()[after:])]


def _given(key: keys.KeyPair, port: int, tmp_path: Path) -> ssh.HostKeyTrust:
    return ssh.trust_for(Media({}, host_key_given=True), key, port,
                         tmp_path / "known_hosts", lambda: "")


def test_login_after_banner_probe_reuses_the_probed_connection(logged_sshd, tmp_path):
    mark = len(logged_sshd.log.read_text())
    conn = ssh.Connection(logged_sshd.port, "root", logged_sshd.client,
                          _given(logged_sshd.host_key, logged_sshd.port, tmp_path))
    try:
        assert conn.probe(5).startswith("SSH-2.0-OpenSSH")
        probed = conn._probed.getsockname()[1]
        assert conn.run("echo hello", 30).stdout == "hello\n"
    finally:
        conn.close()
    assert _connections(logged_sshd, mark) == [probed]


def test_probed_connection_still_refuses_an_impostor_host_key(logged_sshd, tmp_path):
    impostor = keys.generate(tmp_path / "k", "given", "the key the harness gave")
    conn = ssh.Connection(logged_sshd.port, "root", logged_sshd.client,
                          _given(impostor, logged_sshd.port, tmp_path))
    try:
        assert conn.probe(5)
        with pytest.raises(ssh.HostKeyMismatch):
            conn.run("true", 30)
    finally:
        conn.close()


def test_probe_of_a_port_without_sshd_is_none_and_keeps_nothing(tmp_path):
    conn = ssh.Connection(free_port(), "root", None, None)
    assert conn.probe(1) is None
    assert conn._probed is None
