"""Two runs on one libvirt host, with different runtime folders (two users, two CI
jobs): a sweep by one never touches the other while it lives. Real libvirt, real
QEMU processes: the domains are started paused with no disk, so no OS boots."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import libvirt
import pytest
from hostile_helpers import domain_exists, paused_domain

from harness.vm import runs, storage


@pytest.fixture
def two_runtimes(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch):
    """use("a") / use("b"): switch HARNESS_RUNTIME between two folders."""
    def use(name: str) -> None:
        monkeypatch.setenv("HARNESS_RUNTIME", str(shared_tmp / name))
    return use


@pytest.fixture
def made(libvirt_conn):
    """Everything a test made in libvirt, removed at the end whatever happened."""
    mine: dict[str, list] = {"domains": [], "prefixes": []}
    yield mine
    for dom in mine["domains"]:
        runs.destroy_domain(dom)
    for prefix in mine["prefixes"]:
        storage.delete_volumes(libvirt_conn, prefix)


def _volume(conn: libvirt.virConnect, name: str, tmp: Path) -> str:
    data = tmp / "payload"
    data.write_bytes(b"seed" * 256)
    storage.upload(storage.pool(conn), name, data)
    return name


def _volume_exists(conn: libvirt.virConnect, name: str) -> bool:
    pool = storage.pool(conn)
    storage.refresh(pool)
    return name in {v.name() for v in pool.listAllVolumes(0)}


def _dead_owner() -> runs.Owner:
    """The owner record of a process that has exited (a SIGKILLed run, in effect)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    start = runs._start_time(pid)  # still a zombie: /proc/PID/stat is there
    os.waitpid(pid, 0)
    return runs.Owner(runs._host_id(), runs._boot_id(), pid, start)


def test_sweep_from_another_runtime_dir_leaves_live_domain(libvirt_conn, two_runtimes, made):
    two_runtimes("a")
    run = runs.Run.start(libvirt_conn)
    made["prefixes"].append(f"run-{run.id}")
    made["domains"].append(paused_domain(libvirt_conn, run, "live"))
    two_runtimes("b")
    runs.sweep(libvirt_conn)
    assert domain_exists(libvirt_conn, run.domain_name("live"))


def test_sweep_from_another_runtime_dir_leaves_live_runs_volumes(libvirt_conn, two_runtimes,
                                                                 made, tmp_path):
    """A live run between machines has volumes but no domain: they stay too."""
    two_runtimes("a")
    run = runs.Run.start(libvirt_conn)
    made["prefixes"].append(f"run-{run.id}")
    vol = _volume(libvirt_conn, f"{run.volume_prefix()}m.seed.iso", tmp_path)
    two_runtimes("b")
    runs.sweep(libvirt_conn)
    assert _volume_exists(libvirt_conn, vol)


def test_sweep_leaves_runs_of_another_host(libvirt_conn, runtime, made, tmp_path):
    """A run started from another machine (a remote libvirt URI): no pid here can
    tell whether it lives, so it is left alone."""
    run_id = secrets.token_hex(4)
    made["prefixes"].append(f"run-{run_id}")
    elsewhere = runs.Owner("0123456789abcdef", "00000000-0000-0000-0000-000000000000", 1, "1")
    storage.create_marker(storage.pool(libvirt_conn), elsewhere.marker(run_id))
    vol = _volume(libvirt_conn, f"run-{run_id}-m.disk.qcow2", tmp_path)
    runs.sweep(libvirt_conn)
    assert _volume_exists(libvirt_conn, vol)


def test_sweep_removes_a_dead_runs_domain_volumes_and_marker(libvirt_conn, runtime, made,
                                                            shared_tmp, tmp_path):
    """The control: what a killed run left is still cleaned, whoever sweeps."""
    dead = _dead_owner()
    run_dir = shared_tmp / "dead-run"
    run_dir.mkdir(mode=0o711)
    run = runs.Run(secrets.token_hex(4), run_dir, dead)
    made["prefixes"].append(f"run-{run.id}")
    storage.create_marker(storage.pool(libvirt_conn), dead.marker(run.id))
    made["domains"].append(paused_domain(libvirt_conn, run, "orphan"))
    vol = _volume(libvirt_conn, f"{run.volume_prefix()}orphan.seed.iso", tmp_path)
    removed = runs.sweep(libvirt_conn)
    assert not domain_exists(libvirt_conn, run.domain_name("orphan"))
    assert not _volume_exists(libvirt_conn, vol)
    assert not _volume_exists(libvirt_conn, dead.marker(run.id))
    assert f"domain {run.domain_name('orphan')}" in removed


def test_a_run_cleaning_up_after_itself_removes_its_marker(libvirt_conn, runtime, made):
    run = runs.Run.start(libvirt_conn)
    made["prefixes"].append(f"run-{run.id}")
    assert _volume_exists(libvirt_conn, run.owner.marker(run.id))
    runs.sweep(libvirt_conn, finished=frozenset({run.id}))
    assert not _volume_exists(libvirt_conn, run.owner.marker(run.id))
    assert not run.dir.exists()
