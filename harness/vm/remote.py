"""Guests on a remote hypervisor: reached through that host's own SSH.

A libvirt URI with a host name and an SSH transport
(`qemu+ssh://user@host:port/system?keyfile=…&known_hosts=…`, also `+libssh`
and `+libssh2`; https://libvirt.org/uri.html, https://libvirt.org/remote.html)
runs the guests on that host. Each guest's SSH forward stays bound to
127.0.0.1 there; the harness reaches it with a `direct-tcpip` channel through
an SSH connection to the hypervisor (what OpenSSH's ProxyJump does), with the
URI's user, port, key file and known_hosts. The hypervisor's host key must be
in that known_hosts (else OpenSSH's own files): an unknown or changed key is
refused, never added. The guest's host key is then checked end to end over the
channel, exactly as for a local guest.

What libvirt itself does with these parameters (libvirt 9.0,
src/rpc/virnetsocket.c virNetSocketNewConnectSSH): the `ssh` transport runs
`ssh -p PORT -l USER -i KEYFILE -T -e none [-o StrictHostKeyChecking=no] -- HOST
…` and leaves host keys to OpenSSH's own files; `known_hosts` and
`known_hosts_verify` are read by the libssh and libssh2 transports only. For
`qemu+ssh` the URI's `known_hosts` is therefore the harness's alone: the OpenSSH
client that libvirt runs must trust the same key by its own configuration (or a
wrapper given as the URI's `command`).

Free ports for forwards are chosen on the hypervisor (`pick_port`): a port
nobody answers on there, below Linux's ephemeral range; a port taken between
the probe and QEMU's bind makes the domain fail to start, and the machine
retries on another (Machine._start_on_a_free_port). The local port locks of
harness.vm.runs say nothing about another host, so none is taken.

Console logs come back by streaming (virDomainOpenConsole over the libvirt
connection, `ConsoleStream`, driven by libvirt's event loop) into the machine's
local console.log, not by fetching a file after the run: the watchdog, the
readiness phases and the console's host-key block need the console while the
guest runs, and the stream needs no second path to the host's files. The
domain is started (or restored) paused and resumed once the stream is open, so
the console is whole from its first byte.
"""

import contextlib
import getpass
import logging
import secrets
import shlex
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import libvirt
import paramiko

from harness import safefs
from harness.vm import ssh

log = logging.getLogger("harness")

SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
# Below Linux's default ephemeral range (net.ipv4.ip_local_port_range 32768-60999), so
# the hypervisor's own outgoing connections seldom hold a port the harness picks.
FORWARD_PORTS = range(20000, 32768)
OPENSSH_KNOWN_HOSTS = (Path("~/.ssh/known_hosts"), Path("/etc/ssh/ssh_known_hosts"))


class RemoteError(ValueError):
    """A libvirt URI whose host the harness cannot reach its guests on."""


class JumpError(OSError):
    """The hypervisor's SSH cannot be reached: an OSError, so waits treat it as
    "not yet" and a command reports it as a MachineError."""


@dataclass(frozen=True)
class Hypervisor:
    """The SSH side of a remote libvirt URI."""

    uri: str
    host: str
    port: int
    user: str
    keyfile: Path | None
    known_hosts: tuple[Path, ...]

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse(uri: str) -> Hypervisor | None:
    """The hypervisor behind `uri`, or None for a local URI (no host name)."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        return None
    transport = parts.scheme.partition("+")[2] or "tls"  # libvirt's default for a host
    if transport not in SSH_TRANSPORTS:
        raise RemoteError(
            f"--libvirt-uri {uri}: guests on a remote host are reached through its SSH; "
            f"use an SSH transport ({', '.join('qemu+' + t for t in SSH_TRANSPORTS)}), "
            f"not {transport}")
    params = dict(urllib.parse.parse_qsl(parts.query))
    if params.get("no_verify") == "1":
        log.warning("%s: no_verify=1 turns off libvirt's host key check; the harness still "
                    "checks the hypervisor's key against known_hosts", uri)
    keyfile = Path(params["keyfile"]).expanduser() if params.get("keyfile") else None
    known = (Path(params["known_hosts"]).expanduser(),) if params.get("known_hosts") else \
        tuple(p.expanduser() for p in OPENSSH_KNOWN_HOSTS)
    try:
        port = parts.port or 22
    except ValueError:  # urllib's "Port out of range 0-65535", or not a number
        raise RemoteError(f"--libvirt-uri {uri}: the port is not a TCP port (1-65535); "
                          "give the hypervisor's SSH port, or none for 22") from None
    host_keys(known)  # a known_hosts the harness cannot read is said now, with its line
    return Hypervisor(uri, parts.hostname, port, parts.username or getpass.getuser(),
                      keyfile, known)


def _read(path: Path) -> str:
    """A known_hosts file: a regular file of bounded size (a FIFO or device in its
    place would hang or fill memory), else a RemoteError naming it."""
    try:
        return safefs.read_bytes(path.resolve()).decode(errors="replace")  # yours: followed
    except (OSError, ValueError) as e:
        raise RemoteError(f"known_hosts {path}: cannot be read as a file ({e}); "
                          "give a regular file") from None


def host_keys(paths: tuple[Path, ...]) -> paramiko.HostKeys:
    """The host keys OpenSSH known_hosts files trust, read as paramiko cannot: a key
    marked @revoked is never trusted (wherever else it is listed) and @cert-authority
    lines are skipped (the harness checks no host certificates, so a host known only
    through one is refused as unknown). A line it cannot read is a RemoteError."""
    lines = [(path, number, line.strip()) for path in paths if path.is_file()
             for number, line in enumerate(_read(path).splitlines(), 1)]
    lines = [(path, n, line) for path, n, line in lines if line and not line.startswith("#")]
    revoked = {tuple(line.split()[2:4]) for _, _, line in lines if line.startswith("@revoked ")}
    keys = paramiko.HostKeys()
    for path, number, line in lines:
        if line.startswith("@"):
            if line.split()[0] not in ("@revoked", "@cert-authority"):
                raise RemoteError(f"{path} line {number}: unknown marker {line.split()[0]!r} "
                                  "(OpenSSH knows @revoked and @cert-authority); fix the line")
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as e:
            raise RemoteError(f"{path} line {number}: not a known_hosts line the harness can "
                              f"read ({e}); fix or remove it") from None
        if entry is None or (entry.key.get_name(), entry.key.get_base64()) in revoked:
            continue  # a key type paramiko does not know, or a revoked key
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, hv: Hypervisor):
        self.hv = hv

    def missing_host_key(self, client, hostname, key):
        raise ssh.HostKeyMismatch(
            f"hypervisor {self.hv.host}:{self.hv.port} offered {key.get_name()} host key "
            f"{key.fingerprint}, which is not in {', '.join(map(str, self.hv.known_hosts))}: "
            "refusing to connect (add it there, e.g. with ssh-keyscan, once you checked it)")


class Jump:
    """One SSH connection to the hypervisor, reopened when it dropped; guests'
    forwarded ports are reached through channels of it."""

    def __init__(self, hv: Hypervisor):
        self.hv = hv
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _connect(self, timeout: float) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for name, by_type in host_keys(self.hv.known_hosts).items():
            for kind, key in by_type.items():
                client.get_host_keys().add(name, kind, key)
        client.set_missing_host_key_policy(_Refuse(self.hv))
        try:
            client.connect(self.hv.host, self.hv.port, self.hv.user,
                           key_filename=str(self.hv.keyfile) if self.hv.keyfile else None,
                           look_for_keys=self.hv.keyfile is None,
                           allow_agent=self.hv.keyfile is None, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise ssh.HostKeyMismatch(
                f"hypervisor {self.hv.host}:{self.hv.port} offered {e.key.get_name()} host "
                f"key {e.key.fingerprint}, not the {e.expected_key.fingerprint} its "
                "known_hosts lists: refusing to connect") from None
        except (OSError, EOFError, paramiko.SSHException) as e:
            client.close()
            raise JumpError(f"cannot reach the hypervisor's SSH at {self.hv.where}: "
                            f"{type(e).__name__}: {e}") from e
        except BaseException:  # an unknown key (_Refuse) or an interrupt
            client.close()
            raise
        return client

    def transport(self, timeout: float) -> paramiko.Transport:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if t is None or not t.is_active():
                if self._client:
                    self._client.close()
                self._client = self._connect(timeout)
                t = self._client.get_transport()
            return t

    def channel(self, port: int, timeout: float) -> paramiko.Channel:
        """A TCP stream to 127.0.0.1:`port` on the hypervisor."""
        t = self.transport(timeout)
        try:
            return t.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0),
                                  timeout=timeout)
        except EOFError as e:  # the hypervisor's SSH went away under us
            raise JumpError(f"the SSH connection to the hypervisor at {self.hv.where} "
                            f"dropped: {e or 'end of stream'}") from e

    def listening(self, port: int, timeout: float = 10.0) -> bool:
        """Whether something accepts connections on 127.0.0.1:`port` there."""
        try:
            with ssh.quiet_paramiko():
                self.channel(port, timeout).close()
            return True
        except paramiko.ChannelException:  # sshd's "Connect failed": nothing listens
            return False

    def proxy_command(self) -> str:
        """OpenSSH's ProxyCommand for the same hop, for the ssh command shown to people."""
        hop = ["ssh", "-W", "%h:%p", "-p", str(self.hv.port)]
        if self.hv.keyfile:
            hop += ["-i", str(self.hv.keyfile)]
        if self.hv.known_hosts[0].is_file():
            hop += ["-o", f"UserKnownHostsFile={self.hv.known_hosts[0]}"]
        return shlex.join([*hop, "-o", "StrictHostKeyChecking=yes",
                           f"{self.hv.user}@{self.hv.host}"])

    def close(self) -> None:
        with self._lock:
            if self._client:
                self._client.close()
                self._client = None


@dataclass
class RemotePort:
    """A forward port chosen on the hypervisor: nothing to lock or release here."""

    port: int

    def release(self) -> None:
        pass


def pick_port(jump: Jump, tries: int = 20) -> RemotePort:
    """A port nobody answers on at 127.0.0.1 on the hypervisor (see module doc)."""
    for _ in range(tries):
        port = FORWARD_PORTS[secrets.randbelow(len(FORWARD_PORTS))]
        try:
            if not jump.listening(port):
                return RemotePort(port)
        except paramiko.SSHException:  # the channel open timed out: try another port
            continue
    raise JumpError(f"no free port on the hypervisor {jump.hv.host} after {tries} tries")


_EVENTS = threading.Lock()
_events_running = False


def event_loop() -> None:
    """libvirt's default event loop, run by a thread of its own, once per process.

    Console streams over a remote connection need it: a blocking stream read would
    hold the connection's I/O loop, and a call such as virDomainDestroy from another
    thread then waits forever for its reply (seen here with libvirt 9.0). Must run
    before the connection is opened: libvirt binds a connection to the loop at open."""
    global _events_running
    with _EVENTS:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name="libvirt events", daemon=True).start()
        _events_running = True


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class ConsoleStream:
    """A domain's serial console (a pty on the hypervisor), copied as it comes into a
    local file, by callbacks on libvirt's event loop (`event_loop()` must run).
    Open it while the domain is paused, so nothing is lost."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, path: Path):
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.file = open(path, "ab")  # noqa: SIM115 - closed when the stream ends
        self._lock = threading.Lock()
        self.stream.eventAddCallback(
            libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
            | libvirt.VIR_STREAM_EVENT_HANGUP, self._readable, None)

    def _readable(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        with self._lock:
            if self.file.closed:
                return
            try:
                while isinstance(data := stream.recv(65536), bytes) and data:
                    self.file.write(data)
                self.file.flush()
                ended = data == b"" or events & (libvirt.VIR_STREAM_EVENT_ERROR
                                                 | libvirt.VIR_STREAM_EVENT_HANGUP)
            except libvirt.libvirtError:  # the domain or the connection is gone
                ended = True
            if ended:
                self._end()

    def _end(self) -> None:
        for step in (self.stream.eventRemoveCallback, self.stream.abort):
            with contextlib.suppress(libvirt.libvirtError):
                step()
        self.file.close()

    def close(self) -> None:
        with self._lock:
            if not self.file.closed:
                self._end()
