"""The matrix: the suites over several distros at once, on one host or several.

Each distro runs in a pytest process of its own, so each gets its own JUnit
file, artifacts folder and libvirt URI, and its VMs live inside that process.
How many run at once is decided by memory, kola-style: a distro starts only
when a host has room for its VM (harness.vm.accel.guest_cost_mib: the catalog's
memory, TCG's translation cache and QEMU's own overhead)
while keeping a margin free; with several hosts it goes to the one with the
most free memory. A distro whose image cannot be had is recorded as not run,
with the reason, and the others go on.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from harness import catalog, signals
from harness.log import log
from harness.paths import REPO, replace_file
from harness.vm.accel import guest_cost_mib

MARGIN_MIB = 1024  # left free on every host, for the host and the harness
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Job:
    """One distro of the matrix, as the nightly workflow's job list shows it."""

    distro: str
    title: str
    memory_mib: int
    firmware: str
    image: str  # "build": made here from the recipe; "download": fetched and verified


def select(spec: str, known: dict[str, catalog.Distro] | None = None) -> list[str]:
    """`a,b,c` or `all` as catalog names, in the order given (all: catalog order)."""
    known = known if known is not None else catalog.load()
    if spec.strip() == "all":
        return list(known)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise catalog.CatalogError("no distro named; known: " + ", ".join(sorted(known)))
    for name in names:
        catalog.get(name, known)
    return list(dict.fromkeys(names))


def jobs(names: list[str], known: dict[str, catalog.Distro] | None = None) -> list[Job]:
    known = known if known is not None else catalog.load()
    return [Job(d.name, d.title, d.boot.memory_mib, d.boot.firmware,
                "build" if d.builtin else "download") for d in (known[n] for n in names)]


def need_mib(job: Job, accel: str = "auto") -> int:
    """What the job's VM takes from its host under `accel` ("auto" counts as TCG)."""
    return guest_cost_mib(job.memory_mib, accel)


# -- memory -------------------------------------------------------------------------------

def budget(needs_mib: list[int], free_mib: int, margin_mib: int = MARGIN_MIB) -> int:
    """How many VMs may run at once on one host: the most that fit even when the
    biggest ones run together (0 when not even the biggest fits)."""
    room, count = free_mib - margin_mib, 0
    for need in sorted(needs_mib, reverse=True):
        if need > room:
            break
        room -= need
        count += 1
    return count


def place(need: int, free_mib: dict[str, int], margin_mib: int = MARGIN_MIB,
          running: dict[str, int] | None = None) -> str | None:
    """Of the hosts that fit `need` MiB above the margin, the one running the fewest
    of the matrix's VMs, then the one with the most free memory: work spreads over
    every host given, not only the biggest."""
    running = running or {}
    fitting = {uri: free for uri, free in free_mib.items() if free - margin_mib >= need}
    return max(fitting, key=lambda uri: (-running.get(uri, 0), fitting[uri],
                                         -list(free_mib).index(uri)), default=None)


def mem_available_mib(meminfo: Path = MEMINFO) -> int:
    """MemAvailable: free memory plus what the kernel can reclaim (page cache)."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"{meminfo} has no MemAvailable line")


def is_local(uri: str) -> bool:
    return not urllib.parse.urlsplit(uri).hostname


def host_free_mib(uri: str, conn=None) -> int:
    """Free memory of the host behind `uri`: MemAvailable here, libvirt's count elsewhere."""
    if is_local(uri):
        return mem_available_mib()
    return conn.getFreeMemory() // 2**20


class Hosts:
    """Memory bookkeeping across hosts: a job waits until some host has room for it."""

    def __init__(self, free_mib: dict[str, int], margin_mib: int = MARGIN_MIB):
        self.total, self.free, self.margin = dict(free_mib), dict(free_mib), margin_mib
        self.running = dict.fromkeys(free_mib, 0)
        self.cond = threading.Condition()

    def fits_alone(self, need: int) -> bool:
        """Whether any host could take it with nothing else running."""
        return place(need, self.total, self.margin) is not None

    def acquire(self, need: int) -> str:
        with self.cond:
            while (uri := place(need, self.free, self.margin, self.running)) is None:
                self.cond.wait()
            self.free[uri] -= need
            self.running[uri] += 1
            return uri

    def release(self, uri: str, need: int) -> None:
        with self.cond:
            self.free[uri] += need
            self.running[uri] -= 1
            self.cond.notify_all()


# -- pytest --distro=a,b -n N --dist loadgroup ---------------------------------------------

def distro_of(nodeid: str, names: list[str]) -> str | None:
    """The distro a test id was parametrized with. The plugin parametrizes `distro`
    before any other parameter, so its id leads the brackets: `test_x[refos-nocloud]`."""
    params = nodeid.rsplit("::", 1)[-1].partition("[")[2].removesuffix("]")
    fits = [n for n in names if params == n or params.startswith(n + "-")]
    return max(fits, key=len, default=None)


def distro_scheduler(names: list[str]) -> type:
    """An xdist scheduler that sends all of a distro's tests to one worker, so its
    session VM lives there. xdist's own `loadgroup` marks its groups by rewriting node
    ids, which pytest 9.2 ignores (pytest-xdist#1386): this groups by the id instead."""
    from xdist.scheduler import LoadScopeScheduling

    class DistroScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return distro_of(nodeid, names) or super()._split_scope(nodeid)

    return DistroScheduling


# -- running ------------------------------------------------------------------------------

@dataclass
class MatrixOptions:
    """How a matrix runs (the command line's choices); harness.vm.session.Options is
    a session's."""

    artifacts: Path
    uris: list[str]
    suites: list[str]
    accel: str = "auto"
    offline: bool = False
    margin_mib: int = MARGIN_MIB
    pytest_args: tuple[str, ...] = ()


def run(names: list[str], opts: MatrixOptions, free_mib: dict[str, int],
        resolve: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Run every distro, as many at once as memory allows; returns each one's status."""
    plan = jobs(names)
    opts.artifacts.mkdir(parents=True, exist_ok=True)
    replace_file(opts.artifacts / "matrix.json", json.dumps(
        {"distros": [asdict(j) for j in plan], "hosts_free_mib": free_mib,
         "margin_mib": opts.margin_mib}, indent=2) + "\n")
    hosts = Hosts(free_mib, opts.margin_mib)
    resolve = resolve or (lambda name: _resolve(name, opts.offline))
    _STOPPING.clear()
    with ThreadPoolExecutor(max_workers=max(1, len(plan))) as pool:
        try:
            futures = [pool.submit(_one, job, opts, hosts, resolve) for job in plan]
            signals.wait_interruptibly(lambda: all(f.done() for f in futures))
            results = [f.result() for f in futures]
        except KeyboardInterrupt:  # SIGTERM too: each distro's pytest removes its machines
            _stop_children()
            raise
    return {job.distro: status for job, status in zip(plan, results, strict=True)}


# The distros' pytest processes now running, so an interrupted matrix can stop them;
# once it is stopping, a distro whose turn comes (its memory freed by a stopped one)
# does not start.
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _stop_children() -> None:
    """SIGTERM each running distro's pytest (it unwinds and removes its machines)
    and wait for it."""
    with _CHILDREN_LOCK:
        _STOPPING.set()
        children = list(_CHILDREN)
    signals.stop(children)


def _resolve(name: str, offline: bool) -> None:
    """Build or fetch the image now, so a missing one is known before any VM starts."""
    from harness.vm import session

    # ImageUnavailable says it all, in one line for the "not run" row.
    session.Images(session.Options(offline=offline)).get(catalog.get(name))


def _one(job: Job, opts: MatrixOptions, hosts: Hosts, resolve: Callable[[str], None]) -> dict:
    from harness import images
    from harness.images import build

    folder = opts.artifacts / job.distro
    folder.mkdir(parents=True, exist_ok=True)
    need = need_mib(job, opts.accel)
    if not hosts.fits_alone(need):
        status = _not_run(f"needs {need} MiB and no host has that free above the "
                          f"{opts.margin_mib} MiB margin ({hosts.total} MiB free)")
    else:
        try:
            resolve(job.distro)
        except images.ImageUnavailable as e:
            status = _not_run(e.line() if e.distro else f"image unavailable: {e}")
        except images.ImageUsageError as e:  # a bad HARNESS_IMAGE_… file: the user's to fix
            status = {**_not_run(str(e)), "error": True}
        except OSError as e:
            status = _not_run(f"image unavailable: {e}")
        except build.BuildError as e:  # ours to fix: not run, and the matrix fails
            status = {**_not_run(f"image build failed: {e}"), "error": True}
        else:
            uri = hosts.acquire(need)
            try:
                status = _pytest(job, opts, uri, folder)
            finally:
                hosts.release(uri, need)
    replace_file(folder / "status.json", json.dumps(status, indent=2) + "\n")
    log.info("matrix: %s: %s", job.distro, _describe(status))
    return status


def _not_run(reason: str) -> dict:
    return {"ran": False, "reason": reason}


def _pytest(job: Job, opts: MatrixOptions, uri: str, folder: Path) -> dict:
    """One distro's suites in a pytest process of its own; its output goes to pytest.log."""
    cmd = [sys.executable, "-m", "pytest", *opts.suites, f"--distro={job.distro}",
           f"--libvirt-uri={uri}", f"--accel={opts.accel}", f"--artifacts={opts.artifacts}",
           f"--junitxml={folder / 'junit.xml'}", "-p", "no:cacheprovider",
           *(["--offline"] if opts.offline else []), *opts.pytest_args]
    log.info("matrix: %s on %s: %s", job.distro, uri, " ".join(cmd[3:]))
    started = time.monotonic()
    # An earlier run's files go first: its JUnit file would be read as this run's when
    # pytest writes none, and neither is written through a name planted in their place.
    for name in ("pytest.log", "junit.xml"):
        (folder / name).unlink(missing_ok=True)
    try:
        fd = os.open(folder / "pytest.log",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as e:  # planted again since, or a folder by that name
        return _not_run(f"cannot write {folder / 'pytest.log'}: {e.strerror}")
    with open(fd, "w") as out:
        with _CHILDREN_LOCK:  # a matrix being stopped starts no distro
            if _STOPPING.is_set():
                return _not_run("the matrix was stopped")
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            _CHILDREN.add(proc)
        try:
            code = proc.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(proc)
    return {"ran": True, "exit_code": code, "libvirt_uri": uri,
            "seconds": round(time.monotonic() - started, 1),
            **_outcomes(folder / "junit.xml")}


def _outcomes(junit: Path) -> dict:
    """The failed tests (with their first line) and the known bugs reproduced, from
    the distro's JUnit file, so a red matrix says why on its first screen."""
    from harness.report import REPRODUCES

    failed, reproduced = [], []
    try:
        cases = list(ET.parse(junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return {}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        problem = next((p for p in (case.find("failure"), case.find("error")) if p is not None),
                       None)
        skipped = case.find("skipped")
        if problem is not None:
            first = (problem.get("message") or "").strip().splitlines()[:1]
            failed.append(f"{name}: {first[0][:200] if first else 'no message'}")
        elif skipped is not None and skipped.get("message", "").startswith(REPRODUCES):
            reproduced.append(f"{name}: {skipped.get('message')}")
    return {"failed_tests": failed, "reproduced": reproduced}


def _describe(status: dict) -> str:
    if not status["ran"]:
        return f"not run: {status['reason']}"
    verdict = "passed" if status["exit_code"] == 0 else f"FAILED (pytest {status['exit_code']})"
    return f"{verdict} on {status['libvirt_uri']} in {status['seconds']:.0f}s"


def summary(statuses: dict[str, dict]) -> list[str]:
    """One line per distro, then each failed test and each known bug reproduced."""
    lines = []
    for name, s in statuses.items():
        lines.append(f"  {name:20} {_describe(s)}")
        lines += [f"      FAILED {t}" for t in s.get("failed_tests", [])]
        lines += [f"      expected {t}" for t in s.get("reproduced", [])]
    return lines


def exit_code(statuses: dict[str, dict]) -> int:
    """1 when a distro that ran failed, or our own image build did; a distro whose
    image cannot be had fails no one."""
    return int(any(s.get("error") or (s["ran"] and s["exit_code"] != 0)
                   for s in statuses.values()))


def free_by_host(uris: list[str]) -> dict[str, int]:
    """Each host's free memory; its `harness` pool is made now, once, before parallel
    runs would race to define it."""
    import libvirt

    from harness.vm import storage

    free = {}
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            storage.pool(conn)
            free[uri] = host_free_mib(uri, conn)
        finally:
            conn.close()
    return free
