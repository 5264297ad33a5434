"""SSH to a guest with paramiko, verifying its host key.

How the guest's host key is known depends on its first-boot media (see
`trust_for`):

- given: the harness put its own ed25519 host key in the seed; only that key is
  accepted.
- console: a guest that makes its own key and runs cloud-init prints it between
  `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----` on the
  console (cloud-init's tools/write-ssh-key-fingerprints, run by its
  keys_to_console module); keys seen there are pinned.
- first use: otherwise the first key offered is trusted, with a WARNING that names
  its SHA256 fingerprint, and recorded in the machine's known_hosts; every later
  connection must offer the same key, and so must the console if it prints keys
  later. Never silent.

A key that differs from the pinned one raises HostKeyMismatch at once. It is no
SSHException or OSError, so no readiness poll retries it.
"""

import base64
import contextlib
import logging
import re
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from harness.seed import Media
from harness.seed.keys import KeyPair

log = logging.getLogger("harness")

OUTPUT_CAP = 16 * 2**20  # bytes of a command's stdout (and of its stderr) kept in memory
CONSOLE_KEYS = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----",
                          re.S)
KEY_LINE = re.compile(r"((?:ssh|ecdsa)-[a-z0-9-]+) (AAAA[A-Za-z0-9+/]+={0,2})")


class HostKeyMismatch(Exception):
    """The guest offered a host key the harness does not trust: fatal, never retried."""


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str
    truncated: tuple[str, ...] = ()  # "stdout"/"stderr" cut at OUTPUT_CAP

    def describe(self, cmd: str) -> str:
        cut = f"\n(truncated at {OUTPUT_CAP} bytes: {', '.join(self.truncated)})" \
            if self.truncated else ""
        return (f"`{cmd}` exited {self.status}\n--- stdout ---\n{self.stdout.rstrip()}"
                f"\n--- stderr ---\n{self.stderr.rstrip()}{cut}")


def banner(port: int, timeout: float = 2.0, jump=None) -> str | None:
    """The SSH banner on 127.0.0.1:port (of the hypervisor, through `jump`, a
    harness.vm.remote.Jump), or None. QEMU accepts the TCP connection before the
    guest listens, so only the banner proves sshd is up."""
    if jump is None:
        found = peek_banner(port, timeout)
        if found is None:
            return None
        found[0].close()
        return found[1]
    try:
        chan = jump.channel(port, timeout)
        chan.settimeout(timeout)
        with contextlib.closing(chan):
            data = chan.recv(256)
    except (OSError, EOFError, paramiko.SSHException):
        return None
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else None


def peek_banner(port: int, timeout: float) -> tuple[socket.socket, str] | None:
    """An open connection to 127.0.0.1:port whose sshd has sent its banner, and the
    banner; or None. The banner is peeked, not read (MSG_PEEK), so paramiko can
    run the whole handshake on this connection: each new connection makes the
    guest's sshd start a process of its own, which costs seconds under emulation."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        data = s.recv(256, socket.MSG_PEEK)
    except OSError:
        data = b""
    if not data.startswith(b"SSH-"):
        s.close()
        return None
    return s, data.decode(errors="replace").splitlines()[0].strip()


@dataclass
class HostKeyTrust:
    """The host keys the harness accepts from a guest, as (type, base64) pairs,
    mirrored to `known_hosts` (OpenSSH format, for the ssh command shown to people)."""

    given: bool  # the seed carried the key: nothing else is ever accepted
    pinned: list[tuple[str, str]] = field(default_factory=list)
    known_hosts: Path | None = None
    console: Callable[[], str] = field(default=lambda: "")

    def prepare(self, client: paramiko.SSHClient, port: int) -> None:
        """Load what is trusted into `client`, with the policy for anything else."""
        name = host_name(port)
        if not self.given:
            self._learn_from_console(name)
        for kind, blob in self.pinned:
            client.get_host_keys().add(name, kind, _key(kind, blob))
        client.set_missing_host_key_policy(_Refuse() if self.given else _FirstUse(self))

    def _learn_from_console(self, name: str) -> None:
        trusted = dict(self.pinned)
        for kind, blob in console_keys(self.console()):
            if kind not in trusted:
                self.record(name, kind, blob, "read from the guest's console")
                trusted[kind] = blob
            elif trusted[kind] != blob:
                raise HostKeyMismatch(
                    f"guest on {name}: its console prints {kind} host key "
                    f"{_key(kind, blob).fingerprint}, not the trusted "
                    f"{_key(kind, trusted[kind]).fingerprint}: refusing to connect")

    def record(self, name: str, kind: str, blob: str, how: str,
               level: int = logging.INFO) -> None:
        """Trust a key from now on; paramiko's `fingerprint` is OpenSSH's SHA256:base64."""
        log.log(level, "%s host key of the guest on %s %s: %s%s", kind, name, how,
                _key(kind, blob).fingerprint,
                f" (recorded in {self.known_hosts})" if self.known_hosts else "")
        self.pinned.append((kind, blob))
        if self.known_hosts:
            with open(self.known_hosts, "a") as f:
                f.write(f"{name} {kind} {blob}\n")


def trust_for(media: Media, host_key: KeyPair | None, port: int, known_hosts: Path,
              console: Callable[[], str]) -> HostKeyTrust:
    """The host-key policy a machine's first-boot media calls for (see module doc);
    `known_hosts` is (re)written, `console` returns the console log so far."""
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    known_hosts.write_text("")
    if media.host_key_given and host_key is not None:
        trust = HostKeyTrust(True, known_hosts=known_hosts)
        trust.record(host_name(port), "ssh-ed25519", host_key.public_blob,
                     "given by the harness in the seed")
        return trust
    log.warning("guest on %s makes its own SSH host key: the harness pins the key its "
                "console prints, else trusts the first key offered, with a warning",
                host_name(port))
    return HostKeyTrust(False, known_hosts=known_hosts, console=console)


def console_keys(text: str) -> list[tuple[str, str]]:
    """(type, base64) of each key in cloud-init's host key block on a console."""
    keys = []
    for block in CONSOLE_KEYS.findall(text):
        keys += KEY_LINE.findall(block)
    return keys


@contextlib.contextmanager
def quiet_paramiko():
    """paramiko logs every early banner failure as a traceback, and every refused
    channel: expected while polling, so kept out of the log."""
    logger = logging.getLogger("paramiko.transport")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class Connection:
    """One paramiko client, reopened when the guest dropped it (reboots do)."""

    def __init__(self, port: int, user: str, client_key: KeyPair | None,
                 host_key: KeyPair | HostKeyTrust | None, password: str | None = None,
                 jump=None):
        self.port, self.user, self.jump = port, user, jump  # jump: harness.vm.remote.Jump
        self.client_key, self.password = client_key, password
        if isinstance(host_key, HostKeyTrust):
            self.trust = host_key
        else:  # a key given by the caller, pinned in memory only
            self.trust = HostKeyTrust(host_key is not None, [] if host_key is None else
                                      [("ssh-ed25519", host_key.public_blob)])
        self._client: paramiko.SSHClient | None = None
        self._probed: socket.socket | None = None  # a connection whose banner arrived

    def probe(self, timeout: float) -> str | None:
        """The guest's SSH banner, or None when sshd does not answer yet. The
        connection that carried it is kept, and the next connect authenticates on
        it: polling the banner and logging in cost the guest one sshd process.
        Through a jump the channel cannot be peeked, so it is a plain probe."""
        self._drop_probe()
        if self.jump:
            return banner(self.port, timeout, self.jump)
        found = peek_banner(self.port, timeout)
        if found is None:
            return None
        self._probed, text = found
        return text

    def _drop_probe(self) -> None:
        if self._probed is not None:
            self._probed.close()
            self._probed = None

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        self.trust.prepare(client, self.port)
        # Through the hypervisor's SSH to its 127.0.0.1, or on the probe's connection.
        sock, self._probed = self._probed, None  # a stale one fails: the next try is new
        try:
            with quiet_paramiko():
                if self.jump:
                    sock = self.jump.channel(self.port, timeout)
                client.connect("127.0.0.1", self.port, self.user, sock=sock,
                               key_filename=str(self.client_key.private_path)
                               if self.client_key else None, password=self.password,
                               timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                               allow_agent=False, look_for_keys=False,
                               disabled_algorithms=_only_ed25519_hostkeys()
                               if self.trust.given else None)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(
                f"guest on 127.0.0.1:{self.port} offered {e.key.get_name()} host key "
                f"{e.key.fingerprint}, not the trusted {e.expected_key.fingerprint} "
                "refusing to connect") from None
        except BaseException:
            client.close()
            raise
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
        cut = tuple(name for name, buf in (("stdout", out), ("stderr", err)) if buf.cut)
        if cut:
            log.warning("`%s`: %s over %d bytes, the rest dropped", cmd[:80], " and ".join(cut),
                        OUTPUT_CAP)
        return Result(status, out.text(), err.text(), cut)

    def close(self) -> None:
        self._drop_probe()
        if self._client:
            self._client.close()
            self._client = None


class _Capped:
    """The first OUTPUT_CAP bytes of a stream; the rest is read and dropped."""

    def __init__(self) -> None:
        self.data, self.cut = bytearray(), False

    def add(self, chunk: bytes) -> None:
        room = OUTPUT_CAP - len(self.data)
        self.data += chunk[:room]
        self.cut = self.cut or len(chunk) > room

    def text(self) -> str:
        return bytes(self.data).decode(errors="replace")


def _drain(chan: paramiko.Channel, timeout: float) -> tuple[_Capped, _Capped]:
    out, err = _Capped(), _Capped()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out.add(chan.recv(65536))
        elif chan.recv_stderr_ready():
            err.add(chan.recv_stderr(65536))
        elif chan.exit_status_ready() and (chan.eof_received or chan.closed):
            return out, err
        elif time.monotonic() > deadline:
            raise TimeoutError(f"command still running after {timeout:.0f}s")
        else:
            time.sleep(0.02)


def host_name(port: int) -> str:
    return f"[127.0.0.1]:{port}"


def _key(kind: str, blob: str) -> paramiko.PKey:
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def _only_ed25519_hostkeys() -> dict:
    """Ask only for the ed25519 host key, the one whose fingerprint we know."""
    others = [k for k in paramiko.Transport._preferred_keys if "ed25519" not in k]
    return {"keys": others}


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise HostKeyMismatch(f"guest on {hostname} offered an unknown {key.get_name()} host "
                              f"key {key.fingerprint}: refusing to connect")


class _FirstUse(paramiko.MissingHostKeyPolicy):
    """Trust on first use, loudly: the key is logged as a WARNING and recorded."""

    def __init__(self, trust: HostKeyTrust):
        self.trust = trust

    def missing_host_key(self, client, hostname, key):
        if client.get_host_keys().lookup(hostname):  # a key is pinned, of another type
            raise HostKeyMismatch(
                f"guest on {hostname} offered a {key.get_name()} host key {key.fingerprint}, "
                "but a key of another type is trusted: refusing to connect")
        self.trust.record(hostname, key.get_name(), key.get_base64(),
                          "TRUSTED ON FIRST USE (not verified)", logging.WARNING)
        client.get_host_keys().add(hostname, key.get_name(), key)


def ssh_command(port: int, user: str, key: Path, known_hosts: Path,
                proxy: str = "") -> str:
    """What a person types to get into the guest (`proxy`: OpenSSH's ProxyCommand
    for a guest on a remote hypervisor)."""
    hop = f"-o ProxyCommand={shlex.quote(proxy)} " if proxy else ""
    return (f"ssh {hop}-p {port} -i {key} -o UserKnownHostsFile={known_hosts} "
            f"-o StrictHostKeyChecking=yes {user}@127.0.0.1")
