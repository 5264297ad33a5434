"""A run started in another PID namespace (issue 31, item 4): `unshare --pid --fork`,
with its own /proc or with the host's. A sweep from the host leaves it while it
lives and removes what it left once it is gone. Real unshare, real libvirt pool."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness.paths import REPO
from harness.vm import runs, storage

# Starts a run, says its id and marker, and lives until its stdin closes.
CHILD = """
import sys, libvirt
from harness.vm import runs
conn = libvirt.open("qemu:///system")
run = runs.Run.start(conn)
print(run.id, run.owner.marker(run.id), flush=True)
sys.stdin.read()
"""


def _volumes(conn) -> set[str]:
    pool = storage.pool(conn)
    storage.refresh(pool)
    return {v.name() for v in pool.listAllVolumes(0)}


@pytest.mark.parametrize("own_proc", [True, False], ids=["own-proc", "host-proc"])
def test_a_run_in_another_pid_namespace_is_swept_only_once_dead(libvirt_conn, runtime,
                                                                 own_proc):
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is missing")
    argv = ["unshare", "--pid", "--fork", *(["--mount-proc"] if own_proc else []),
            sys.executable, "-c", CHILD]
    child = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        run_id, marker = child.stdout.readline().split()
        runs.sweep(libvirt_conn)  # from the host, while the run lives
        assert marker in _volumes(libvirt_conn)
        assert (runtime / "runs" / run_id).is_dir()
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
    runs.sweep(libvirt_conn)  # the control: once it is gone, its leftovers go
    assert marker not in _volumes(libvirt_conn)
    assert not (runtime / "runs" / run_id).exists()


# Records itself as a run's owner, then asks whether that owner lives.
SELF_STATE = """
from harness.vm import runs
print(runs.Owner.current().state())
"""


def test_a_run_sees_itself_alive_in_a_pid_namespace_with_the_hosts_proc():
    """Without --mount-proc, /proc/<pid> of the namespace's pid is another process of
    the host: the run must not read that one's start time as its own and call itself
    dead (a sweep from inside the namespace would remove a live run)."""
    out = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", SELF_STATE],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "alive", out.stdout + out.stderr


# Prints the state of the owner given in argv, as uid 65534 would see it.
OTHER_STATE = """
import sys
from harness.vm import runs
host, boot, pid, start, pidns = sys.argv[1:]
print(runs.Owner(host, boot, int(pid), start, int(pidns)).state())
"""


def test_a_sweeper_that_cannot_see_a_namespace_leaves_its_run_alone():
    """A sweeper that is not root cannot read root's processes' namespaces: it cannot
    tell whether root's namespaced run lives, so it must say "foreign", not "dead"."""
    child = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                              "-c", "import sys; from harness.vm import runs; "
                              "print(*runs.Owner.current().attrs().values(), flush=True); "
                              "sys.stdin.read()"],
                             cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        owner = child.stdout.readline().split()
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", OTHER_STATE, *owner],
                             cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert out.stdout.strip() == "foreign", out.stdout + out.stderr
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
