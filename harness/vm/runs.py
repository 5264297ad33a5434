"""A run's identity and everything it owns, so nothing outlives it.

Each process that boots machines registers a run: a directory under the runtime
dir (keys, console logs, port locks) and an owner record where every sweeper
sees it, whatever runtime dir it uses: the domain's libvirt metadata and a
zero-size marker volume `run-<id>.owner.<host>.<boot>.<pid>.<start>` in the
pool. The owner (host id, boot id, pid and the pid's start time) says whether
the run is alive; a recycled pid or a rebooted host is a dead run. `sweep()`
removes what dead runs of this host left behind (after a SIGKILL) and touches
nothing else: not a live run, not a run of another host, not a domain or
volume whose owner it cannot tell.
"""

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from harness.log import log
from harness.paths import private_mkdir, runtime_dir
from harness.vm import domain, network, storage

DOMAIN_PREFIX = "harness-"
VOLUME_RUN = re.compile(r"run-([0-9a-f]+)(?=[-.])")
MARKER = re.compile(
    r"run-([0-9a-f]+)\.owner\.([0-9a-f]+)\.([0-9a-f-]+)\.(\d+)\.(\d+)(?:\.(\d+))?")
# The initial PID namespace's inode (PROC_PID_INIT_INO, include/linux/proc_ns.h): a
# sweeper in it sees every process of the host, whatever namespace it runs in.
INIT_PIDNS = 0xEFFFFFFC

# libvirt prints every error to stderr besides raising it; the harness reports
# the errors it raises itself (and expects some, such as a vanished domain).
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _start_time(pid: int) -> str | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]


def _self_start() -> str:
    """This process's start time, from /proc/self (right in any PID namespace: `self`
    is this process whichever namespace's /proc is mounted, unlike os.getpid())."""
    return Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]


def _pidns(pid: int | str = "self") -> int | None:
    """The PID namespace's inode; None when the process is gone or its namespace
    cannot be read (another user's process, for a sweeper that is not root)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _proc_is_own() -> bool:
    """Whether /proc is this process's PID namespace's (`unshare --pid` without
    --mount-proc leaves the host's, where pids are the host's numbers)."""
    return os.readlink("/proc/self") == str(os.getpid())


def _alive_in_pidns(pidns: int, pid: int, start: str) -> bool | None:
    """Whether a process of PID namespace `pidns` (pid `pid` there) started at `start`
    still lives, looked up by its namespace inode and NSpid; None when this process
    cannot tell: it is not in the initial namespace, or a process that matches by
    NSpid and start time hides its namespace (another user's, for a sweeper that is
    not root, or any under a sandbox's rules)."""
    hidden = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _is_owner(entry, pid, start):
            continue
        try:
            if os.stat(entry / "ns" / "pid").st_ino == pidns:
                return True
        except PermissionError:
            hidden = True  # it could be the one: cannot tell
        except OSError:
            continue  # gone meanwhile
    return False if _pidns() == INIT_PIDNS and not hidden else None


def _is_owner(entry: Path, pid: int, start: str) -> bool:
    """Whether /proc entry `entry` is pid `pid` in its innermost namespace (NSpid, in
    the world-readable status) and started at `start`."""
    try:
        status = (entry / "status").read_text()
    except OSError:
        return False
    nspid = next((line.split()[1:] for line in status.splitlines()
                  if line.startswith("NSpid:")), [])
    return bool(nspid) and nspid[-1] == str(pid) and _start_time(int(entry.name)) == start


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _host_id() -> str:
    """This host, as a short hex digest of /etc/machine-id (or the host name)."""
    try:
        ident = Path("/etc/machine-id").read_text().strip()
    except OSError:
        ident = ""
    return hashlib.sha256((ident or socket.gethostname()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Owner:
    """The process a run belongs to, as recorded beside what the run made."""

    host: str
    boot: str
    pid: int  # as this process sees itself: in its own PID namespace
    start: str
    pidns: int = 0  # that namespace's inode; 0 in records of an older harness

    @classmethod
    def current(cls) -> "Owner":
        return cls(_host_id(), _boot_id(), os.getpid(), _self_start(), _pidns() or 0)

    @classmethod
    def from_attrs(cls, attrs: dict[str, str]) -> "Owner | None":
        try:
            return cls(attrs["host"], attrs["boot"], int(attrs["pid"]), attrs["start"],
                       int(attrs.get("pidns", 0)))
        except (KeyError, ValueError):
            return None

    def attrs(self) -> dict[str, str]:
        return {"host": self.host, "boot": self.boot, "pid": str(self.pid),
                "start": self.start, "pidns": str(self.pidns)}

    def state(self) -> str:
        """"alive", "dead", or "foreign" (made from another host, or from a PID
        namespace this process cannot see into: cannot tell)."""
        if self.host != _host_id():
            return "foreign"
        if self.boot != _boot_id():
            return "dead"  # this host rebooted since
        if self.pidns and (self.pidns != _pidns() or not _proc_is_own()):
            found = _alive_in_pidns(self.pidns, self.pid, self.start)
            return "foreign" if found is None else "alive" if found else "dead"
        return "alive" if _start_time(self.pid) == self.start else "dead"

    def marker(self, run_id: str) -> str:
        return f"run-{run_id}.owner.{self.host}.{self.boot}.{self.pid}.{self.start}." \
               f"{self.pidns}"


def owner_of_marker(name: str) -> tuple[str, Owner] | None:
    if m := MARKER.fullmatch(name):
        return m[1], Owner(m[2], m[3], int(m[4]), m[5], int(m[6] or 0))
    return None


@dataclass(frozen=True)
class Run:
    id: str
    dir: Path
    owner: Owner

    @classmethod
    def start(cls, conn: libvirt.virConnect) -> "Run":
        """A new run: its folder here, and its owner marker in the pool of `conn`
        (before any volume of it exists, so no sweeper takes them for a dead run's)."""
        run_id = secrets.token_hex(4)
        owner = Owner.current()
        parent = private_mkdir(runtime_dir() / "runs")
        path = private_mkdir(parent / run_id)  # 0711: QEMU opens fw_cfg files below it
        (path / "owner.json").write_text(json.dumps(dataclasses.asdict(owner)))
        storage.create_marker(storage.pool(conn), owner.marker(run_id))
        return cls(run_id, path, owner)

    def volume_prefix(self) -> str:
        return f"run-{self.id}-"

    def domain_name(self, machine: str) -> str:
        return f"{DOMAIN_PREFIX}{self.id}-{machine}"


def alive(run_dir: Path) -> bool:
    """Whether the run of a folder under our runtime dir may still run: only a record
    that says its process is gone makes it dead. A record of an older harness (pid
    and start time only) is checked by those; one that cannot be read is left alone."""
    try:
        record = json.loads((run_dir / "owner.json").read_text())
    except FileNotFoundError:  # no record: a run starting now, or killed as it started
        try:
            return time.time() - run_dir.stat().st_mtime < 60
        except OSError:
            return False
    except (OSError, ValueError):
        return True
    owner = Owner.from_attrs(record) if isinstance(record, dict) else None
    if owner is not None:
        return owner.state() != "dead"
    try:
        return _start_time(int(record["pid"])) == record["start"]
    except (KeyError, TypeError, ValueError):
        return True


class PortLock:
    """A free 127.0.0.1 TCP port, held under an flock until released.

    The lock dies with the process, so a SIGKILLed run frees its ports; the
    stale lock files are swept later. Lock files are opened without following
    symlinks and never truncated."""

    def __init__(self) -> None:
        locks = private_mkdir(runtime_dir() / "ports", 0o700)
        for _ in range(50):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            fd = _open_lock(locks / f"{port}.lock", create=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.port, self._fd, self._path = port, fd, locks / f"{port}.lock"
            return
        raise RuntimeError("no free 127.0.0.1 port could be locked after 50 tries")

    def release(self) -> None:
        self._path.unlink(missing_ok=True)
        os.close(self._fd)


def _open_lock(path: Path, create: bool = False) -> int:
    """A lock file's descriptor: never through a symlink, never a non-regular file."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def destroy_domain(dom: libvirt.virDomain) -> None:
    """Stop and forget a domain this harness made, whatever state it is in."""
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):  # transient domains are gone once destroyed
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _dead(run_id: str, owner: Owner | None, finished: frozenset[str], left: set[str]) -> bool:
    if run_id in finished:
        return True
    if owner is None:
        left.add(run_id)  # made before owners were recorded, or not by us: hands off
        return False
    return owner.state() == "dead"


def sweep(conn: libvirt.virConnect, finished: frozenset[str] = frozenset()) -> list[str]:
    """Remove what dead runs left: domains, volumes, cluster switches, run dirs, stale
    port locks.

    Liveness comes from each run's own owner record, never from which runtime dir
    the sweeper uses. `finished` names runs to sweep although their process
    lives: a run cleaning up after itself at its end."""
    local = runtime_dir()  # refused (UnsafeRuntimeDir) before anything is removed
    removed: list[str] = []
    left: set[str] = set()
    for dom in conn.listAllDomains(0):
        try:
            if not dom.name().startswith(DOMAIN_PREFIX):
                continue
            made = domain.owner_of(dom.XMLDesc(0))
        except libvirt.libvirtError:  # another run removed it since the listing
            continue
        if made and _dead(made[0], Owner.from_attrs(made[1]), finished, left):
            destroy_domain(dom)
            removed.append(f"domain {dom.name()}")
    removed += _sweep_volumes(conn, finished, left)
    removed += _sweep_local(local, finished)
    for line in removed:
        log.info("clean: removed %s", line)
    if left:
        log.warning("clean: left domains or volumes of run(s) %s alone: no owner record "
                    "says they are dead (remove them with virsh if you know they are)",
                    ", ".join(sorted(left)))
    return removed


def _sweep_volumes(conn: libvirt.virConnect, finished: frozenset[str],
                   left: set[str]) -> list[str]:
    """A dead run's volumes, then its marker last (so a sweep killed half way is redone)."""
    pool = storage.pool(conn)
    storage.refresh(pool)
    volumes = pool.listAllVolumes(0)
    markers = dict(m for v in volumes if (m := owner_of_marker(v.name())))
    removed = []
    for vol in sorted(volumes, key=lambda v: owner_of_marker(v.name()) is not None):
        name = vol.name()
        if (m := VOLUME_RUN.match(name)) and _dead(m[1], markers.get(m[1]), finished, left) \
                and storage.delete(vol):
            removed.append(f"volume {name}")
    return removed


def _sweep_local(local: Path, finished: frozenset[str]) -> list[str]:
    """Run dirs of dead runs and unheld port locks under our own runtime dir (one the
    harness made: paths.runtime_dir refuses any other). What another sweep removed
    first is not an error."""
    removed = []
    for path in (local / "runs").glob("*"):
        if path.name in finished or not alive(path):
            removed += network.sweep_run(path)  # a switch that outlived its run
            shutil.rmtree(path, ignore_errors=True)  # rmtree does not follow symlinks
            removed.append(f"run dir {path}")
    for lock in (local / "ports").glob("*.lock"):
        try:
            fd = _open_lock(lock)
        except FileNotFoundError:  # released, or swept by another sweep, since the listing
            continue
        except OSError:  # a symlink or something else planted: remove the name only
            lock.unlink(missing_ok=True)
            removed.append(f"port lock {lock.name} (not a regular file)")
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink(missing_ok=True)
            removed.append(f"port lock {lock.name}")
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return removed
