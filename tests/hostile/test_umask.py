"""A user whose umask is 002 (the default of many distros for users) must pass the
harness's own checks on folders the harness made for them: made 0775, they would be
refused as writable by group, and the user could not run at all (same cause as the
trusted-folder checks of issue 31)."""

import os
import stat

import pytest

from harness import cli, paths, safefs
from harness.vm import savecache


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def _writable_by_others(*folders) -> list[str]:
    return [f"{p} {stat.S_IMODE(os.stat(p).st_mode):04o}" for p in folders
            if os.stat(p).st_mode & 0o022]


def test_cache_folders_made_under_umask_002_pass_the_caches_checks(tmp_path, umask_002):
    root = tmp_path / "home" / ".cache" / "container-os-harness"
    made = safefs.folder(root / "download" / "by-url-sha256", root)
    assert made is not None
    assert not _writable_by_others(root.parent.parent, root.parent, root, made)


def test_saves_folder_made_under_umask_002_is_used(tmp_path, umask_002, libvirt_conn):
    cache = savecache.SaveCache(libvirt_conn, tmp_path / "home" / ".cache" / "h" / "saves")
    try:
        assert not _writable_by_others(*list(cache.root.parents)[:3], cache.root)
    finally:
        cache.close()


def test_runtime_folder_made_under_umask_002_is_used(tmp_path, umask_002, monkeypatch):
    monkeypatch.setenv("HARNESS_RUNTIME", str(tmp_path / "run" / "user" / "harness"))
    made = paths.runtime_dir()
    assert not _writable_by_others(made.parent.parent, made.parent, made)


def test_seed_out_folder_made_under_umask_002_is_accepted(tmp_path, umask_002):
    out = tmp_path / "new" / "out"
    assert cli.main(["seed", "refos", "--out", str(out)]) == 0
    assert not _writable_by_others(out.parent, out)
