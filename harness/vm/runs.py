"""A run's identity and everything it owns, so nothing outlives it.

Each process that boots machines registers a run: a directory under the runtime
dir holding its pid (and the pid's start time, so a recycled pid is not taken
for a live run), keys, console logs and port locks. Domains carry the run id in
their metadata and volumes in their names. `sweep()` removes what runs that are
no longer alive left behind (after a SIGKILL) and touches nothing else.
"""

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import libvirt

from harness.log import log
from harness.paths import runtime_dir
from harness.vm import domain, storage

DOMAIN_PREFIX = "harness-"

# libvirt prints every error to stderr besides raising it; the harness reports
# the errors it raises itself (and expects some, such as a vanished domain).
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Run:
    id: str
    dir: Path

    @classmethod
    def start(cls) -> "Run":
        run_id = secrets.token_hex(4)
        path = runtime_dir() / "runs" / run_id
        path.mkdir(parents=True, mode=0o711)  # QEMU opens console logs below it
        owner = {"pid": os.getpid(), "start": _start_time(os.getpid())}
        (path / "owner.json").write_text(json.dumps(owner))
        return cls(run_id, path)

    def volume_prefix(self) -> str:
        return f"run-{self.id}-"

    def domain_name(self, machine: str) -> str:
        return f"{DOMAIN_PREFIX}{self.id}-{machine}"


def alive(run_dir: Path) -> bool:
    try:
        owner = json.loads((run_dir / "owner.json").read_text())
    except (OSError, ValueError):
        return False
    return _start_time(owner["pid"]) == owner["start"]


class PortLock:
    """A free 127.0.0.1 TCP port, held under an flock until released.

    The lock dies with the process, so a SIGKILLed run frees its ports; the
    stale lock files are swept later."""

    def __init__(self) -> None:
        locks = runtime_dir() / "ports"
        locks.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            f = open(locks / f"{port}.lock", "w")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.port, self._file = port, f
            return
        raise RuntimeError("no free 127.0.0.1 port could be locked after 50 tries")

    def release(self) -> None:
        Path(self._file.name).unlink(missing_ok=True)
        self._file.close()


def destroy_domain(dom: libvirt.virDomain) -> None:
    """Stop and forget a domain this harness made, whatever state it is in."""
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):  # transient domains are gone once destroyed
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def sweep(conn: libvirt.virConnect, finished: frozenset[str] = frozenset()) -> list[str]:
    """Remove what dead runs left: domains, volumes, run dirs, stale port locks.

    `finished` names runs to sweep although their process lives: a run
    cleaning up after itself at its end."""
    runs = runtime_dir() / "runs"
    live = {p.name for p in runs.glob("*") if alive(p)} - finished
    removed = []
    for dom in conn.listAllDomains(0):
        if not dom.name().startswith(DOMAIN_PREFIX):
            continue
        run_id = domain.run_id_of(dom.XMLDesc(0))
        if run_id and run_id not in live:
            destroy_domain(dom)
            removed.append(f"domain {dom.name()}")
    pool = storage.pool(conn)
    pool.refresh(0)
    for vol in pool.listAllVolumes(0):
        name = vol.name()
        if name.startswith("run-") and name.split("-")[1] not in live:
            vol.delete(0)
            removed.append(f"volume {name}")
    for path in runs.glob("*"):
        if path.name not in live:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"run dir {path}")
    for lock in (runtime_dir() / "ports").glob("*.lock"):
        with open(lock, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            lock.unlink(missing_ok=True)
            removed.append(f"port lock {lock.name}")
    for line in removed:
        log.info("clean: removed %s", line)
    return removed
