"""SSH to a guest with paramiko, verifying the host key the harness gave it."""

import base64
import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.seed.keys import KeyPair


class HostKeyMismatch(paramiko.SSHException):
    pass


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str

    def describe(self, cmd: str) -> str:
        return (f"`{cmd}` exited {self.status}\n--- stdout ---\n{self.stdout.rstrip()}"
                f"\n--- stderr ---\n{self.stderr.rstrip()}")


def banner(port: int, timeout: float = 2.0) -> str | None:
    """The SSH banner on 127.0.0.1:port, or None. QEMU accepts the TCP
    connection before the guest listens, so only the banner proves sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            data = s.recv(256)
    except OSError:
        return None
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else None


class Connection:
    """One paramiko client, reopened when the guest dropped it (reboots do)."""

    def __init__(self, port: int, user: str, client_key: KeyPair, host_key: KeyPair | None):
        self.port, self.user = port, user
        self.client_key, self.host_key = client_key, host_key
        self._client: paramiko.SSHClient | None = None

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.host_key:
            hostname = f"[127.0.0.1]:{self.port}"
            client.get_host_keys().add(
                hostname, "ssh-ed25519", paramiko.Ed25519Key(data=_decode(self.host_key)))
            client.set_missing_host_key_policy(_Refuse())
        else:  # a distro that cannot be given host keys: the catalog says so
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        quiet = logging.getLogger("paramiko.transport")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # paramiko logs every early banner failure as a traceback
        try:
            client.connect("127.0.0.1", self.port, self.user,
                           key_filename=str(self.client_key.private_path), timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, allow_agent=False,
                           look_for_keys=False, disabled_algorithms=_only_ed25519_hostkeys())
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(
                f"guest on 127.0.0.1:{self.port} offered host key {e.key.get_base64()[:24]}..., "
                f"not the one the harness gave it ({e.expected_key.get_base64()[:24]}...): "
                "refusing to connect") from e
        finally:
            quiet.setLevel(level)
        return client

    def run(self, cmd: str, timeout: float, sudo: bool = True,
            stdin: bytes | None = None) -> Result:
        if sudo and self.user != "root":
            cmd = "sudo -n sh -c " + shlex.quote(cmd)
        if self._client is None or not self._client.get_transport() or \
                not self._client.get_transport().is_active():
            self._client = self._connect(timeout)
        chan = self._client.get_transport().open_session(timeout=timeout)
        chan.settimeout(timeout)
        chan.exec_command(cmd)
        if stdin is not None:
            chan.sendall(stdin)
            chan.shutdown_write()
        out, err = _drain(chan, timeout)
        status = chan.recv_exit_status()
        chan.close()
        return Result(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def sftp(self, timeout: float) -> paramiko.SFTPClient:
        self.run("true", timeout, sudo=False)
        return self._client.open_sftp()

    def close(self) -> None:
        if self._client:
            self._client.close()
            self._client = None


def _drain(chan: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        elif chan.exit_status_ready() and (chan.eof_received or chan.closed):
            return bytes(out), bytes(err)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"command still running after {timeout:.0f}s")
        else:
            time.sleep(0.02)


def _decode(key: KeyPair) -> bytes:
    return base64.b64decode(key.public_blob)


def _only_ed25519_hostkeys() -> dict:
    """Ask only for the ed25519 host key, the one whose fingerprint we know."""
    others = [k for k in paramiko.Transport._preferred_keys if "ed25519" not in k]
    return {"keys": others}


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise HostKeyMismatch(f"guest on {hostname} offered an unknown {key.get_name()} host key")


def ssh_command(port: int, user: str, key: Path, known_hosts: Path) -> str:
    """What a person types to get into the guest."""
    return (f"ssh -p {port} -i {key} -o UserKnownHostsFile={known_hosts} "
            f"-o StrictHostKeyChecking=yes {user}@127.0.0.1")
