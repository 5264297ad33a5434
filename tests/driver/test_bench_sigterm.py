"""`make bench` stopped with SIGTERM in the parts that boot besides its first machine:
two VMs booting at once in threads, and the suites run in a pytest child. Real
processes, real libvirt: the part is started in a process of its own, killed with
SIGTERM as soon as it makes a machine's first volume, then the host is searched
for leftovers of every run it started (volumes, owner marker included, and
domains)."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import libvirt
import pytest

from harness.vm import runs, storage
from tests.helpers import REPO
from tests.hostile.test_killed_entry_points import _descendants

pytestmark = pytest.mark.vm

PARTS = {
    "two_at_once": "bench.two_at_once(s, s.spec(catalog.get(DISTRO)), 100.0)",
    "suites_child": "signals.run_child([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',"
                    " '--offline', f'--distro={DISTRO}', 'tests/driver/hold_a_machine.py'])",
}
DRIVER = """
import sys
from pathlib import Path
from harness import catalog, signals
from harness.signals import unwind_on_sigterm
from harness.vm.session import Options, Session
from tools import bench
DISTRO = {distro!r}
with unwind_on_sigterm(), Session(Options(saves=False, artifacts=Path({artifacts!r}))) as s:
    {part}
"""


def _runs_of(conn, pids: set[int]) -> set[str]:
    """Runs (ids) whose owner marker names one of `pids` and that made a volume
    besides the marker: SIGTERM then lands while machines are being made."""
    pool = storage.pool(conn)
    with contextlib.suppress(libvirt.libvirtError):  # another run's volume job
        storage.refresh(pool)
    names = [v.name() for v in pool.listAllVolumes(0)]
    mine = {m[0] for n in names if (m := runs.owner_of_marker(n)) and m[1].pid in pids}
    return {r for r in mine if any(n.startswith(f"run-{r}-") for n in names)}


def _leftovers(conn, run_id: str) -> list[str]:
    pool = storage.pool(conn)
    storage.refresh(pool)
    return [d.name() for d in conn.listAllDomains(0) if d.name().startswith(
        f"harness-{run_id}-")] + [v.name() for v in pool.listAllVolumes(0)
                                  if v.name().startswith(f"run-{run_id}")]


@pytest.mark.parametrize("part", sorted(PARTS))
def test_bench_part_stopped_with_sigterm_leaves_no_domain_or_volume(libvirt_conn, distro,
                                                                    local_image, part,
                                                                    tmp_path):
    code = DRIVER.format(distro=distro.name, artifacts=str(tmp_path), part=PARTS[part])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            env={**os.environ, "HARNESS_TEST_HOLD": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[str] = set()
    out = ""
    try:
        deadline = time.monotonic() + 600
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            pids = _descendants(proc.pid)
            seen = _runs_of(libvirt_conn, pids)
            time.sleep(0.05)
        if not seen:
            proc.kill()
            pytest.fail(f"no machine was being made:\n{proc.communicate()[0][-3000:]}")
        os.kill(proc.pid, signal.SIGTERM)  # the process this test started
        out = proc.communicate(timeout=300)[0]  # held parts never end by themselves
        assert not [p for p in pids if p != proc.pid and os.path.exists(f"/proc/{p}")], \
            "a child outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(2)  # nothing is made after the process ended
    for run_id in seen:
        assert _leftovers(libvirt_conn, run_id) == [], out[-3000:]
