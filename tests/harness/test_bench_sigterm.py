"""`make bench` stopped with SIGTERM in the parts that boot besides its first machine:
two VMs booting at once in threads, and the suites run in a pytest child. Real
processes, real libvirt: the part is started in a process of its own, killed with
SIGTERM once a domain of it exists, then the host is searched for leftovers of
every run it started."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO
from tests.hostile.test_killed_entry_points import _descendants, _leftovers

pytestmark = pytest.mark.vm

PARTS = {
    "two_at_once": "bench.two_at_once(s, s.recipe(catalog.get(DISTRO)), 100.0)",
    "suites_child": "bench.run_child([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',"
                    " '--offline', f'--distro={DISTRO}', 'tests/harness/hold_a_machine.py'])",
}
DRIVER = """
import sys
from harness import catalog
from harness.vm.session import Options, Session, unwind_on_sigterm
from tools import bench
DISTRO = {distro!r}
with unwind_on_sigterm(), Session(Options(saves=False, artifacts={artifacts!r})) as s:
    {part}
"""


def _domains_of(conn, pids: set[int]) -> list[str]:
    from harness.vm import domain

    names = []
    for dom in conn.listAllDomains(0):
        try:
            made = domain.owner_of(dom.XMLDesc(0))
        except Exception:  # gone meanwhile
            continue
        if made and made[1].get("pid", "").isdigit() and int(made[1]["pid"]) in pids:
            names.append(dom.name())
    return names


@pytest.mark.parametrize("part", sorted(PARTS))
def test_bench_part_stopped_with_sigterm_leaves_no_domain_or_volume(libvirt_conn, distro,
                                                                    local_image, part,
                                                                    tmp_path):
    code = DRIVER.format(distro=distro.name, artifacts=str(tmp_path), part=PARTS[part])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                            env={**os.environ, "HARNESS_TEST_HOLD": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 600
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            seen.update(_domains_of(libvirt_conn, _descendants(proc.pid)))
            time.sleep(0.5)
        assert seen, "no domain appeared"
        time.sleep(2)  # the second boot of two_at_once gets under way too
        seen.update(_domains_of(libvirt_conn, _descendants(proc.pid)))
        pids = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # the process this test started
        stopped = time.monotonic()
        out = proc.communicate(timeout=300)[0]
        assert time.monotonic() - stopped < 120, out[-3000:]
        assert not [p for p in pids if os.path.exists(f"/proc/{p}")], "a child outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for name in seen:
        assert _leftovers(libvirt_conn, name) == [], out[-3000:]
