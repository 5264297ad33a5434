"""The warm cache (harness.vm.savecache) on a real libvirt pool, without booting an
OS: eviction by age and size, `harness clean --saves` against plain `harness
clean`, and two runs restoring one real save at once (a tiny domain, started
paused, saved by libvirt)."""

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest
from hostile_helpers import paused_domain, paused_spec

from harness import paths
from harness.vm import runs, savecache, snapshot, storage
from tests.helpers import REPO

MIB = 2**20


@pytest.fixture
def cache(libvirt_conn, tmp_path, monkeypatch) -> savecache.SaveCache:
    """A cache folder of the test's own; its `save-` volumes are removed at the end."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    c = savecache.SaveCache(libvirt_conn)
    yield c
    c.close()
    for key in os.listdir(c.root):
        storage.delete_volumes(libvirt_conn, c.volume(key.split(".")[0], ""))


def _entry(cache: savecache.SaveCache, key: str, mib: int, used: float, tmp: Path) -> None:
    """A kept save as the cache sees it: its record and a real pool volume."""
    entry = cache.entry(key)
    entry.mkdir(mode=0o700)
    (entry / "meta.json").write_text(json.dumps({"size": mib * MIB}))
    os.utime(entry / "meta.json", (used, used))
    (tmp / "payload").write_bytes(b"disk" * 256)
    storage.upload(storage.pool(cache.conn), cache.volume(key, "disk.qcow2"), tmp / "payload")


def _volumes(conn: libvirt.virConnect, key: str, cache: savecache.SaveCache | None = None
             ) -> list[str]:
    pool = storage.pool(conn)
    storage.refresh(pool)
    prefix = (cache or savecache.SaveCache(conn)).volume(key, "")
    return [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(prefix)]


def _held(cache: savecache.SaveCache, key: str) -> int:
    """What another session using `key` holds (flock conflicts across open files)."""
    return savecache._flock(cache.root / f"{key}.use.lock", fcntl.LOCK_SH)


def test_least_recently_used_saves_are_evicted_first_and_one_in_use_stays(cache, tmp_path):
    now = time.time()
    for key, age in (("aaaa01", 300), ("bbbb02", 200), ("cccc03", 100)):
        _entry(cache, key, 100, now - age, tmp_path)
    in_use = _held(cache, "aaaa01")  # the oldest, but a live session restores from it
    try:
        gone = cache.evict(250 * MIB)
    finally:
        os.close(in_use)
    assert gone == ["bbbb02"]
    assert not cache.entry("bbbb02").exists() and not _volumes(cache.conn, "bbbb02")
    for key in ("aaaa01", "cccc03"):
        assert cache.entry(key).exists() and _volumes(cache.conn, key)


def test_clean_keeps_saves_and_clean_saves_empties_the_cache(cache, tmp_path, runtime):
    for key in ("dddd04", "eeee05"):
        _entry(cache, key, 1, time.time(), tmp_path)
    storage.upload(storage.pool(cache.conn), cache.volume("ffff06", "disk.qcow2"),
                   tmp_path / "payload")  # a stray volume of a save never completed
    other = savecache.SaveCache(cache.conn, tmp_path / "other-users-cache")
    theirs = other.volume("abcd07", "disk.qcow2")  # the pool is shared by every cache
    storage.upload(storage.pool(cache.conn), theirs, tmp_path / "payload")
    harness = [sys.executable, "-m", "harness", "clean"]
    subprocess.run(harness, cwd=REPO, check=True, capture_output=True)
    assert all(cache.entry(k).exists() and _volumes(cache.conn, k) for k in ("dddd04", "eeee05"))
    in_use = _held(cache, "eeee05")
    try:
        out = subprocess.run([*harness, "--saves"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout
    finally:
        os.close(in_use)
    assert "removed 2 saved machine(s)" in out and "in use by a running session: eeee05" in out
    assert not cache.entry("dddd04").exists() and not _volumes(cache.conn, "dddd04")
    assert not _volumes(cache.conn, "ffff06")
    assert cache.entry("eeee05").exists()
    try:
        assert _volumes(cache.conn, "abcd07", other) == [theirs]
    finally:
        storage.delete_volumes(cache.conn, theirs)


def test_two_runs_restore_one_save_at_once_under_names_of_their_own(libvirt_conn, runtime,
                                                                     tmp_path):
    maker = runs.Run.start(libvirt_conn)
    dom = paused_domain(libvirt_conn, maker, "tpl")
    kept = tmp_path / "memory.save"
    dom.save(str(kept))
    xml = libvirt_conn.saveImageGetXMLDesc(str(kept), libvirt.VIR_DOMAIN_XML_SECURE)
    restored, users = [], [runs.Run.start(libvirt_conn) for _ in range(2)]
    try:
        for run in users:
            copy_xml, name = savecache.session_copy(kept, run.dir / "tpl.save", xml,
                                                    run.domain_name("tpl"))
            spec = dataclasses.replace(paused_spec(run, "tpl"), name=name)
            dxml = snapshot.restore_xml(spec, copy_xml)
            libvirt_conn.restoreFlags(str(run.dir / "tpl.save"), dxml, 0)
            restored.append(libvirt_conn.lookupByName(name))
        assert all(d.isActive() for d in restored)
        assert len({d.UUIDString() for d in restored}) == 2
        assert [runs.domain.run_id_of(d.XMLDesc(0)) for d in restored] == [u.id for u in users]
        assert kept.exists()  # the kept save is only read
    finally:
        for d in restored:
            runs.destroy_domain(d)
        for run in (maker, *users):
            runs.sweep(libvirt_conn, finished=frozenset({run.id}))


@pytest.mark.parametrize("trap", ["symlink", "group-writable"])
def test_a_save_folder_someone_else_could_change_is_refused(tmp_path, monkeypatch, trap):
    """Keys and memory images go into the save folder: one that is a symlink (to a
    place another user chose) or that others may write is refused, not used."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    if trap == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        (tmp_path / "cache" / "saves").symlink_to(tmp_path / "elsewhere")
    else:
        (tmp_path / "cache" / "saves").mkdir()
        os.chmod(tmp_path / "cache" / "saves", 0o777)
    with pytest.raises(paths.UnsafeRuntimeDir, match="HARNESS_CACHE"):
        savecache.SaveCache(None)


def test_a_save_thrown_away_leaves_the_cache_when_the_session_closes(cache, tmp_path):
    """The bench's warm start makes a save for itself only: Templates.throw_away
    removes it from the warm cache at close; another recipe's save stays."""
    for key in ("aaaa11", "bbbb12"):
        _entry(cache, key, 1, time.time(), tmp_path)
    templates = snapshot.Templates(cache.conn, cache)
    templates.cache_keys.update({"mine": "aaaa11", "kept": "bbbb12"})
    templates.throw_away("mine")
    templates.close()
    assert not cache.entry("aaaa11").exists() and not _volumes(cache.conn, "aaaa11")
    assert cache.entry("bbbb12").exists() and _volumes(cache.conn, "bbbb12")
