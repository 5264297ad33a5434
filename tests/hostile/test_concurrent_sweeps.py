"""Two sweeps at once (issue 31, item 2): `harness clean & harness clean`, or two
sessions opening together (make test's two streams). A volume, domain or lock file
that the other sweep removed first is not an error. Real libvirt, real pool."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import libvirt
import pytest

from harness.paths import REPO
from harness.vm import runs, storage
from harness.vm.session import Options, Session

VOLUMES = 40


def _dead_owner() -> runs.Owner:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    start = runs._start_time(pid)
    os.waitpid(pid, 0)
    return runs.Owner(runs._host_id(), runs._boot_id(), pid, start)


@pytest.fixture
def dead_run(libvirt_conn):
    """A killed run's marker and many (empty) volumes in the shared pool."""
    run_id, owner = secrets.token_hex(4), _dead_owner()
    pool = storage.pool(libvirt_conn)
    storage.create_marker(pool, owner.marker(run_id))
    names = [f"run-{run_id}-m{i}.seed.iso" for i in range(VOLUMES)]
    for name in names:
        storage.create_marker(pool, name)
    yield run_id, [*names, owner.marker(run_id)]
    storage.delete_volumes(libvirt_conn, f"run-{run_id}")


def _left(conn: libvirt.virConnect, names: list[str]) -> set[str]:
    pool = storage.pool(conn)
    storage.refresh(pool)
    return set(names) & {v.name() for v in pool.listAllVolumes(0)}


class _PoolWithARival:
    """The real pool, whose listing is followed at once by another sweeper deleting a
    listed volume through its own connection: the race, made certain (a fault the
    real pool cannot be made to produce on cue)."""

    def __init__(self, pool: libvirt.virStoragePool, victim: str):
        self._pool, self._victim = pool, victim

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def listAllVolumes(self, flags: int):
        listed = self._pool.listAllVolumes(flags)
        if not self._victim:
            return listed
        victim, self._victim = self._victim, ""
        rival = libvirt.open("qemu:///system")
        try:
            rival.storagePoolLookupByName(storage.POOL).storageVolLookupByName(
                victim).delete(0)
        finally:
            rival.close()
        return listed


def test_a_volume_another_sweep_removed_first_is_not_an_error(libvirt_conn, runtime,
                                                               dead_run, monkeypatch):
    _, names = dead_run
    rival = _PoolWithARival(storage.pool(libvirt_conn), names[0])
    monkeypatch.setattr(storage, "pool", lambda conn: rival)
    removed = runs.sweep(libvirt_conn)
    monkeypatch.undo()
    assert not _left(libvirt_conn, names)
    assert f"volume {names[0]}" not in removed and f"volume {names[1]}" in removed


def test_two_harness_cleans_at_once_both_succeed_and_leave_nothing(libvirt_conn, runtime,
                                                                   dead_run):
    _, names = dead_run
    env = {**os.environ, "HARNESS_RUNTIME": str(runtime)}
    cleans = [subprocess.Popen([sys.executable, "-m", "harness", "clean"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    results = [(c.wait(120), c.stderr.read()) for c in cleans]
    for c in cleans:
        c.stdout.close()
        c.stderr.close()
    assert [rc for rc, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    assert not _left(libvirt_conn, names)


def test_a_session_opens_while_another_sweep_removes_the_same_leftovers(
        libvirt_conn, runtime, dead_run, monkeypatch):
    _, names = dead_run
    real_pool = storage.pool
    rival = _PoolWithARival(real_pool(libvirt_conn), names[1])
    monkeypatch.setattr(storage, "pool", lambda conn: rival if conn is not libvirt_conn
                        else real_pool(conn))
    session = Session(Options(saves=False)).open()
    monkeypatch.undo()
    try:
        assert session.run is not None
    finally:
        session.close()
    assert not _left(libvirt_conn, names)
