"""Who answers on the forwarded port: the harness trusts only the host key it gave
the guest, or for guests that make their own key (RancherOS, BurmillaOS, Snappy
15.04) the key the console prints, else the first key offered, loudly. Against a
real OpenSSH server on 127.0.0.1 with its own config, port and host key."""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from hostile_helpers import Sshd

from harness.seed import Media, keys
from harness.vm import machine, ssh

# cloud-init's helper that its keys_to_console module runs at the end of boot
# (cloud-init tools/write-ssh-key-fingerprints; Debian ships it here).
KEYS_TO_CONSOLE = Path("/usr/lib/cloud-init/write-ssh-key-fingerprints")
OWN_KEY = Media({}, host_key_given=False)  # a guest that makes its own host key


def openssh_fingerprint(pub: str) -> str:
    """The fingerprint as OpenSSH's own ssh-keygen prints it."""
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=pub, capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def _trust(sshd: Sshd, tmp_path: Path, media: Media = OWN_KEY, console: str = "",
           given: keys.KeyPair | None = None) -> ssh.HostKeyTrust:
    return ssh.trust_for(media, given, sshd.port, tmp_path / "known_hosts", lambda: console)


def _run(sshd: Sshd, trust, cmd: str = "echo hello") -> ssh.Result:
    conn = ssh.Connection(sshd.port, "root", sshd.client, trust)
    try:
        return conn.run(cmd, 30)
    finally:
        conn.close()


def test_host_key_mismatch_is_not_retried_by_readiness_polls():
    """Machine.poll retries SSH_ERRORS until the boot timeout: a mismatch must not be one."""
    assert not issubclass(ssh.HostKeyMismatch, machine.SSH_ERRORS)
    assert not issubclass(ssh.HostKeyMismatch, paramiko.SSHException)


def test_impostor_host_key_is_refused_with_openssh_fingerprints(sshd, tmp_path):
    given = keys.generate(tmp_path / "k", "given", "the key the seed carried")
    trust = _trust(sshd, tmp_path, Media({}, host_key_given=True), given=given)
    with pytest.raises(ssh.HostKeyMismatch) as refused:
        _run(sshd, trust)
    message = str(refused.value)
    assert openssh_fingerprint(sshd.host_key.public) in message  # what was offered
    assert openssh_fingerprint(given.public) in message  # what is trusted


def test_guest_own_host_key_is_trusted_on_first_use_loudly(sshd, tmp_path, caplog):
    trust = _trust(sshd, tmp_path)
    assert _run(sshd, trust).stdout == "hello\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    fp = openssh_fingerprint(sshd.host_key.public)
    assert any("TRUSTED ON FIRST USE" in w and fp in w for w in warnings), warnings
    assert sshd.host_key.public_blob in (tmp_path / "known_hosts").read_text()


def test_key_trusted_on_first_use_is_pinned_afterwards(sshd, tmp_path):
    trust = _trust(sshd, tmp_path)
    _run(sshd, trust)
    sshd.start(keys.generate(tmp_path / "k", "impostor", "another guest on the port"))
    with pytest.raises(ssh.HostKeyMismatch, match="refusing to connect"):
        _run(sshd, trust)


def _console_with_keys_of(sshd: Sshd) -> str:
    """What cloud-init prints: its real helper run over a folder that holds the key
    sshd uses, framed by other console lines."""
    sshd.start(keys.KeyPair(Path("/etc/ssh/ssh_host_ed25519_key"),
                            Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()))
    printed = subprocess.run(["sh", str(KEYS_TO_CONSOLE), "", "ssh-rsa,ecdsa-sha2-nistp256"],
                             capture_output=True, text=True, check=True).stdout
    return "[   42.1] cloud-init[612]: final stage\r\n" + printed.replace("\n", "\r\n")


def test_host_key_printed_on_console_is_pinned_without_first_use(sshd, tmp_path, caplog):
    console = _console_with_keys_of(sshd)
    assert "-----BEGIN SSH HOST KEY KEYS-----" in console
    trust = _trust(sshd, tmp_path, console=console)
    assert _run(sshd, trust).status == 0
    assert "TRUSTED ON FIRST USE" not in caplog.text
    assert "read from the guest's console" in caplog.text


def test_console_key_contradicting_the_offered_key_is_refused(sshd, tmp_path):
    console = _console_with_keys_of(sshd)
    sshd.start(keys.generate(tmp_path / "k", "impostor", "not the key the console shows"))
    with pytest.raises(ssh.HostKeyMismatch):
        _run(sshd, _trust(sshd, tmp_path, console=console))


@pytest.fixture
def password_user() -> tuple[str, str]:
    """A throwaway local account with a password (Snappy 15.04's ubuntu/ubuntu in kind)."""
    name, password = f"hpw{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True)
        yield name, password
    finally:  # the sshd session of the test may take a moment to end
        deadline = time.monotonic() + 10
        while subprocess.run(["userdel", name], capture_output=True).returncode == 8 and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert subprocess.run(["id", name], capture_output=True).returncode != 0


def test_password_login_for_guests_that_take_no_key(sshd, tmp_path, password_user):
    name, password = password_user
    media = Media({}, password_login=(name, password), host_key_given=False)
    conn = ssh.Connection(sshd.port, name, None, _trust(sshd, tmp_path, media), password)
    try:
        assert conn.run("id -un", 30, sudo=False).stdout.strip() == name
    finally:
        conn.close()


def test_guest_flooding_stdout_does_not_grow_harness_memory(sshd, tmp_path):
    trust = _trust(sshd, tmp_path, Media({}, host_key_given=True), given=sshd.host_key)
    flood = 24 * 2**20
    result = _run(sshd, trust, f"head -c {flood} /dev/zero; echo done >&2")
    assert len(result.stdout) < flood
    assert len(result.stdout) == ssh.OUTPUT_CAP
    assert result.truncated == ("stdout",) and result.stderr == "done\n"
