"""The hop to a remote hypervisor (harness.vm.remote.Jump), against a real OpenSSH
server on 127.0.0.1 standing in for the hypervisor: its host key is checked
against the URI's known_hosts (never added), and guests' forwarded ports on its
loopback are reached through `direct-tcpip` channels, with the guest's own host
key still checked end to end."""

from pathlib import Path

import pytest
from hostile_helpers import Sshd, free_port

from harness.seed import keys
from harness.vm import remote, ssh


def _jump(sshd: Sshd, known_hosts: Path) -> remote.Jump:
    return remote.Jump(remote.parse(
        f"qemu+ssh://root@127.0.0.1:{sshd.port}/system?keyfile={sshd.client.private_path}"
        f"&known_hosts={known_hosts}"))


@pytest.fixture
def known(sshd: Sshd, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key.public}\n")
    return path


def test_jump_reaches_ports_on_the_hypervisors_loopback(sshd, known):
    jump = _jump(sshd, known)
    try:
        assert ssh.banner(sshd.port, jump=jump).startswith("SSH-2.0-OpenSSH")
        assert jump.listening(sshd.port)
        assert not jump.listening(free_port())
        assert not jump.listening(remote.pick_port(jump).port)
    finally:
        jump.close()


def test_guest_ssh_runs_over_the_jump_and_its_host_key_is_still_checked(sshd, known, tmp_path):
    jump = _jump(sshd, known)
    try:  # the "guest" is the sshd itself, on the hypervisor's 127.0.0.1
        conn = ssh.Connection(sshd.port, "root", sshd.client, sshd.host_key, jump=jump)
        assert conn.run("echo through", 30).stdout == "through\n"
        conn.close()
        impostor = keys.generate(tmp_path / "k", "impostor", "not the guest's key")
        conn = ssh.Connection(sshd.port, "root", sshd.client, impostor, jump=jump)
        with pytest.raises(ssh.HostKeyMismatch, match="refusing to connect"):
            conn.run("echo through", 30)
    finally:
        jump.close()


def test_hypervisor_missing_from_known_hosts_is_refused_not_added(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ssh.HostKeyMismatch, match="which is not in"):
        _jump(sshd, empty).channel(sshd.port, 10)
    assert empty.read_text() == ""


def test_hypervisor_with_another_key_is_refused(sshd, tmp_path):
    other = keys.generate(tmp_path / "k", "other", "the key known_hosts expects")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other.public}\n")
    with pytest.raises(ssh.HostKeyMismatch, match="refusing to connect"):
        _jump(sshd, known).channel(sshd.port, 10)


def test_unreachable_hypervisor_is_a_jump_error_naming_it(sshd, known):
    sshd.stop()
    with pytest.raises(remote.JumpError, match=f"root@127.0.0.1:{sshd.port}"):
        _jump(sshd, known).channel(sshd.port, 10)
