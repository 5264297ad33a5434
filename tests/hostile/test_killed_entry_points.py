"""Every entry point unwinds on SIGTERM: a CI job cancelled mid-boot leaves no domain
and no volume behind. Real processes, real libvirt: each command is started, killed
with SIGTERM once its first domain exists, then the host is searched for leftovers."""

import os
import signal
import subprocess
import sys
import time

import libvirt
import pytest

from harness.paths import REPO
from harness.vm import domain, storage

pytestmark = pytest.mark.vm


def _domain_of(conn: libvirt.virConnect, pids: set[int]) -> str | None:
    """The name of a harness domain whose owner is one of `pids`, if one runs."""
    for dom in conn.listAllDomains(0):
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError:
            continue
        made = domain.owner_of(xml)
        if made and made[1].get("pid", "").isdigit() and int(made[1]["pid"]) in pids:
            return dom.name()
    return None


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _leftovers(conn: libvirt.virConnect, name: str) -> list[str]:
    run_id = name.split("-")[1]
    pool = storage.pool(conn)
    storage.refresh(pool)
    names = [d.name() for d in conn.listAllDomains(0) if d.name() == name]
    return names + [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(
        f"run-{run_id}")]


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "tools.bench"],
    [sys.executable, "-m", "harness", "matrix", "--distro", "refos", "--offline",
     "--suite", str(REPO / "tests/suites/test_facts.py")],
], ids=["bench", "matrix"])
def test_sigterm_mid_boot_leaves_no_domain_or_volume(libvirt_conn, command, tmp_path):
    if command[-1].endswith("test_facts.py"):
        command = [*command, "--artifacts", str(tmp_path / "artifacts")]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, name = time.monotonic() + 600, None
        while name is None and time.monotonic() < deadline and proc.poll() is None:
            name = _domain_of(libvirt_conn, _descendants(proc.pid))
            time.sleep(0.5)
        assert name, "no domain appeared"
        os.kill(proc.pid, signal.SIGTERM)  # the process this test started
        # Stopped, not run to its end: a finished bench or matrix would exit 0.
        assert proc.wait(timeout=300) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _leftovers(libvirt_conn, name) == []
