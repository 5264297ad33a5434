"""Run the VM tests of `make test` as pytest processes, one per core at a time.

Each stream is a pytest process of its own, one distro's VM tests, with its output
in artifacts/test-<name>.log. Under TCG each guest keeps one core busy, so two
streams run side by side (one per core, and no more than the host's free memory
holds: harness.vm.accel.guest_cost_mib), longest first, and the next starts when
one ends. A line says when each stream starts and ends; every few minutes one says what
is still running. At the end each stream's summary is printed, and the tail of every
failed stream's log. The exit status is non-zero when any stream failed. SIGTERM
(a cancelled CI job) is passed on to the running streams, whose sessions remove
their machines, and waited for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import catalog, matrix, signals
from harness.vm.accel import guest_cost_mib

ARTIFACTS = Path("artifacts")
HEARTBEAT = 300.0  # seconds between "still running" lines
POLL = 0.2  # seconds between checks for an ended stream
FAILED_TAIL = 80  # lines of a failed stream's log shown at the end
STOP_GRACE = 180.0  # seconds a stopped stream has to remove its machines


@dataclass(frozen=True)
class Stream:
    """One pytest process: a name, its distro and its test paths; `guests`, the most
    guests it runs at once (a cluster's members), for its memory cost."""
    name: str
    distro: str
    paths: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    guests: int = 1

    @property
    def log(self) -> Path:
        return ARTIFACTS / f"test-{self.name}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pytest", *self.paths, f"--distro={self.distro}",
                "--offline", "-p", "no:cacheprovider", "--durations=10",
                *(f"--ignore={p}" for p in self.ignore)]


# Longest first, so the short ones fill the gaps at the end. refos carries the
# driver's own tests, the suites and the bug cases. Each twin runs only what its own
# mechanism changes, so each behaviour is proven once per mechanism: refos-ostree
# and refos-snap first boot through cloud-init's NoCloud as refos does, so they skip
# the first-boot suite; refos-ignition updates through refos's A/B slots, so it runs
# Ignition's tests and the Docker suite (its first boot is a systemd first boot,
# where presets decide which units run).
FIRST_BOOT = "tests/suites/test_first_boot.py"
CLUSTER = "tests/driver/test_cluster.py"
# The cluster suites (etcd, Swarm, fleet) boot three members at once: their own
# streams, counted as three guests; the single-guest streams leave them out.
CLUSTER_SUITES = "tests/suites/cluster"
ETCD_IGNITION = "tests/suites/cluster/test_etcd_ignition.py"
SNAPPY_BUG = "tests/bugs/test_snappy_docker_permission_denied.py"
STREAMS = (
    Stream("refos-snap", "refos-snap", ("tests/suites", SNAPPY_BUG),
           ignore=(FIRST_BOOT, CLUSTER_SUITES)),
    Stream("refos", "refos", ("tests/suites", "tests/bugs"), ignore=(CLUSTER_SUITES,)),
    Stream("refos-driver", "refos", ("tests/driver",),
           ignore=("tests/driver/test_ignition.py", CLUSTER)),
    # Clusters (harness.vm.cluster): up to three members at once, counted in memory.
    Stream("refos-cluster", "refos", (CLUSTER, CLUSTER_SUITES), ignore=(ETCD_IGNITION,),
           guests=3),
    Stream("refos-ostree", "refos-ostree", ("tests/suites",),
           ignore=(FIRST_BOOT, CLUSTER_SUITES)),
    Stream("refos-ignition", "refos-ignition",
           ("tests/driver/test_ignition.py", "tests/suites/test_docker.py",
            "tests/suites/test_etcd_unconfigured.py")),
    # etcd-member.service configured by Ignition, the etcd suite's second format.
    Stream("refos-ignition-cluster", "refos-ignition", (ETCD_IGNITION,), guests=3),
)


@dataclass
class Running:
    stream: Stream
    proc: subprocess.Popen
    started: float


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def _summary(log: Path) -> str:
    """pytest's last line ("== 12 passed, 2 skipped in ... =="), or why there is none."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else "(no output)"


def _start(stream: Stream) -> Running:
    ARTIFACTS.mkdir(exist_ok=True)
    _say(f"start {stream.name}: {' '.join(stream.command()[1:])} (log {stream.log})")
    with open(stream.log, "w") as out:
        proc = subprocess.Popen(stream.command(), stdout=out, stderr=subprocess.STDOUT)
    return Running(stream, proc, time.monotonic())


def run(streams: list[Stream], lanes: int) -> dict[Stream, tuple[int, float]]:
    """Run the streams, `lanes` at a time; each stream's exit status and duration."""
    running: list[Running] = []
    try:
        with signals.unwind_on_sigterm():
            return _run(list(streams), running, lanes)
    except KeyboardInterrupt:
        _stop(running)
        raise


def _stop(running: list[Running]) -> None:
    """SIGTERM to each running stream, then wait: each pytest unwinds its session and
    destroys its domains. One that outlives STOP_GRACE is killed."""
    _say("interrupted; stopping " + ", ".join(r.stream.name for r in running))
    started = time.monotonic()
    signals.stop([r.proc for r in running], STOP_GRACE)
    _say(f"stopped in {_clock(time.monotonic() - started)}")


def _run(waiting: list[Stream], running: list[Running], lanes: int
         ) -> dict[Stream, tuple[int, float]]:
    done: dict[Stream, tuple[int, float]] = {}
    last_beat = time.monotonic()
    while waiting or running:
        while waiting and len(running) < lanes:
            running.append(_start(waiting.pop(0)))
        time.sleep(POLL)
        for r in [r for r in running if r.proc.poll() is not None]:
            running.remove(r)
            took = time.monotonic() - r.started
            done[r.stream] = (r.proc.returncode, took)
            _say(f"end {r.stream.name} (exit {r.proc.returncode}) after {_clock(took)}: "
                 f"{_summary(r.stream.log)}")
        if running and time.monotonic() - last_beat > HEARTBEAT:
            last_beat = time.monotonic()
            _say("still running: " + ", ".join(
                f"{r.stream.name} ({_clock(last_beat - r.started)})" for r in running))
    return done


def report(done: dict[Stream, tuple[int, float]]) -> bool:
    """Print the tails of failed streams and one summary line each; True if all passed."""
    for stream, (code, _) in done.items():
        if code:
            tail = stream.log.read_text(errors="replace").splitlines()[-FAILED_TAIL:]
            print(f"\n== {stream.name} failed (exit {code}); last {len(tail)} lines of "
                  f"{stream.log}:", *tail, sep="\n")
    print("\n== VM test streams")
    for stream, (code, took) in done.items():
        print(f"{stream.name:16} {'passed' if code == 0 else 'FAILED':7} {_clock(took):>8}  "
              f"{_summary(stream.log)}")
    return all(code == 0 for code, _ in done.values())


def selected(names: list[str]) -> list[Stream]:
    """The streams asked for (all by default) whose distro the catalog has."""
    known = catalog.load()
    chosen = [s for s in STREAMS if (not names or s.name in names) and s.distro in known]
    unknown = set(names) - {s.name for s in STREAMS}
    if unknown:
        raise SystemExit(f"no test stream for {', '.join(sorted(unknown))}; "
                         f"streams: {', '.join(s.name for s in STREAMS)}")
    return chosen


def lanes_that_fit(streams: list[Stream], cores: int, free_mib: int,
                   margin_mib: int = matrix.MARGIN_MIB) -> int:
    """Streams at a time: one per core, fewer when free memory cannot hold that many
    guests at once (each counted at its real cost, a cluster stream's members all
    together, the dearest first); at least one."""
    known = catalog.load()
    needs = [guest_cost_mib(known[s.distro].boot.memory_mib, "auto") * s.guests
             for s in streams]
    return max(1, min(cores, matrix.budget(needs, free_mib, margin_mib)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="*", help="streams to run (default: all)")
    parser.add_argument("--lanes", type=int, default=0,
                        help="streams at a time (default: one per core, as memory allows)")
    args = parser.parse_args()
    started = time.monotonic()
    streams = selected(args.streams)
    cores = os.cpu_count() or 2
    lanes = args.lanes or lanes_that_fit(streams, cores, matrix.mem_available_mib())
    if lanes < min(cores, len(streams)) and not args.lanes:
        _say(f"{lanes} stream(s) at a time: free memory holds no more guests")
    try:
        ok = report(run(streams, max(1, lanes)))
    except KeyboardInterrupt:
        print(f"VM tests stopped after {_clock(time.monotonic() - started)}")
        return 130
    print(f"VM tests {'passed' if ok else 'FAILED'} in {_clock(time.monotonic() - started)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
