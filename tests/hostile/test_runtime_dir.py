"""Another user on the host prepares the runtime folder before the harness runs
(it is at a predictable path): the harness refuses it or is not fooled by it."""

import os
from pathlib import Path

import pytest
from hostile_helpers import NOBODY, other_user_can

from harness import paths
from harness.vm import runs


def test_runtime_dir_made_by_another_user_is_refused(shared_tmp, monkeypatch):
    trap = shared_tmp / "container-os-harness-0"
    trap.mkdir(mode=0o777)
    os.chown(trap, NOBODY, NOBODY)
    trap.chmod(0o777)
    monkeypatch.setenv("HARNESS_RUNTIME", str(trap))
    with pytest.raises(paths.UnsafeRuntimeDir, match=f"{trap} is owned by uid {NOBODY}"):
        paths.runtime_dir()


def test_world_writable_runtime_dir_is_refused(shared_tmp, monkeypatch):
    loose = shared_tmp / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    monkeypatch.setenv("HARNESS_RUNTIME", str(loose))
    with pytest.raises(paths.UnsafeRuntimeDir, match="writable by group or others"):
        paths.runtime_dir()


def test_symlinked_runtime_dir_is_refused(shared_tmp, monkeypatch):
    elsewhere = shared_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (shared_tmp / "link").symlink_to(elsewhere)
    monkeypatch.setenv("HARNESS_RUNTIME", str(shared_tmp / "link"))
    with pytest.raises(paths.UnsafeRuntimeDir, match="not a plain folder"):
        paths.runtime_dir()


def test_root_default_runtime_dir_is_not_in_world_writable_tmp(monkeypatch, shared_tmp):
    """/tmp/container-os-harness-0 could be made by anyone first; root uses /run
    (not its own XDG_RUNTIME_DIR either: 0700, QEMU's user could not pass it)."""
    monkeypatch.delenv("HARNESS_RUNTIME", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared_tmp))
    assert os.geteuid() == 0, "the harness runs as root here"
    path = paths.runtime_dir()
    assert path == Path("/run/container-os-harness")
    st = path.stat()
    assert st.st_uid == 0 and not st.st_mode & 0o022


def test_other_users_get_their_xdg_runtime_dir_not_tmp(shared_tmp, monkeypatch):
    xdg = shared_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, NOBODY, NOBODY)
    monkeypatch.delenv("HARNESS_RUNTIME", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))

    def uses_xdg() -> None:
        if paths.runtime_dir() != xdg / "container-os-harness":
            raise AssertionError("not under XDG_RUNTIME_DIR")

    assert other_user_can(uses_xdg)


def test_planted_port_lock_symlink_does_not_truncate_victim(runtime, shared_tmp, libvirt_conn):
    """A lock file that is a symlink is removed by the sweep, never opened for writing."""
    victim = shared_tmp / "victim.txt"
    victim.write_text("precious")
    ports = paths.runtime_dir() / "ports"
    ports.mkdir(parents=True, exist_ok=True)
    (ports / "4242.lock").symlink_to(victim)
    runs.sweep(libvirt_conn)
    assert victim.read_text() == "precious"
    assert not (ports / "4242.lock").is_symlink()


def test_port_lock_is_not_created_through_a_planted_symlink(runtime, shared_tmp):
    victim = shared_tmp / "victim.txt"
    victim.write_text("precious")
    lock = runs.PortLock()
    port = lock.port
    lock.release()
    (paths.runtime_dir() / "ports" / f"{port}.lock").symlink_to(victim)
    with pytest.raises(OSError):
        runs._open_lock(paths.runtime_dir() / "ports" / f"{port}.lock", create=True)
    assert victim.read_text() == "precious"


def test_other_users_cannot_list_run_ids(runtime, libvirt_conn):
    run = runs.Run.start(libvirt_conn)
    try:
        assert other_user_can(lambda: os.stat(run.dir))  # QEMU must traverse
        assert not other_user_can(lambda: os.listdir(run.dir.parent))
        assert not other_user_can(lambda: os.listdir(run.dir))
    finally:
        runs.sweep(libvirt_conn, finished=frozenset({run.id}))


def test_runtime_dir_below_another_users_folder_is_refused(shared_tmp, monkeypatch):
    """Its owner could rename the runtime folder away after the check and put their own
    in its place (issue 31, item 7's cause, for the runtime folder)."""
    theirs = shared_tmp / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    monkeypatch.setenv("HARNESS_RUNTIME", str(theirs / "runtime"))
    with pytest.raises(paths.UnsafeRuntimeDir, match=f"{theirs} is owned by uid {NOBODY}"):
        paths.runtime_dir()
