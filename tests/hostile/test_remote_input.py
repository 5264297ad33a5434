"""Bad remote input ends in one clear line, not a traceback (issue 31, lows): a URI
port out of range, and OpenSSH known_hosts markers paramiko cannot read (@revoked,
@cert-authority). A revoked hypervisor key is refused by a real sshd connection."""

from pathlib import Path

import pytest
from hostile_helpers import Sshd

from harness.vm import remote, ssh
from harness.vm.session import Options, Session, SessionError


@pytest.mark.parametrize("port", ["99999", "0x16", "-1"])
def test_a_uri_port_out_of_range_is_a_remote_error(port):
    with pytest.raises(remote.RemoteError, match="not a TCP port"):
        remote.parse(f"qemu+ssh://root@127.0.0.1:{port}/system")


def test_a_session_on_such_a_uri_says_so_in_one_line():
    with pytest.raises(SessionError, match="not a TCP port"):
        Session(Options(libvirt_uri="qemu+ssh://root@127.0.0.1:99999/system")).open()


def _uri(sshd: Sshd, known: Path) -> str:
    return (f"qemu+ssh://root@127.0.0.1:{sshd.port}/system?"
            f"keyfile={sshd.client.private_path}&known_hosts={known}")


def test_revoked_and_cert_authority_lines_are_read_and_a_revoked_key_refused(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    blob = " ".join(sshd.host_key.public.split()[:2])
    known.write_text(f"@cert-authority *.example {blob}\n"
                     f"[127.0.0.1]:{sshd.port} {blob}\n"
                     f"@revoked * {blob}\n")
    jump = remote.Jump(remote.parse(_uri(sshd, known)))
    try:
        with pytest.raises(ssh.HostKeyMismatch, match="which is not in"):
            jump.channel(sshd.port, 10)
    finally:
        jump.close()


def test_the_same_known_hosts_without_the_revocation_connects(sshd, tmp_path):
    """The control: the key is trusted when nothing revokes it."""
    known = tmp_path / "known_hosts"
    blob = " ".join(sshd.host_key.public.split()[:2])
    known.write_text(f"@cert-authority *.example {blob}\n[127.0.0.1]:{sshd.port} {blob}\n")
    jump = remote.Jump(remote.parse(_uri(sshd, known)))
    try:
        assert jump.listening(sshd.port)
    finally:
        jump.close()


def test_an_unreadable_known_hosts_line_names_file_and_line(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("# fine\nhost ssh-ed25519 not-base64!\n")
    with pytest.raises(remote.RemoteError, match=f"{known} line 2"):
        remote.parse(f"qemu+ssh://root@127.0.0.1:22/system?known_hosts={known}")


def test_a_known_hosts_larger_than_any_real_one_is_refused_not_read_whole(tmp_path):
    known = tmp_path / "known_hosts"
    with known.open("wb") as f:
        f.truncate(64 * 2**20)  # sparse: 64 MiB of NULs
    with pytest.raises(remote.RemoteError, match=f"known_hosts {known}: cannot be read"):
        remote.parse(f"qemu+ssh://root@127.0.0.1:22/system?known_hosts={known}")
