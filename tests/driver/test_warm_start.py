"""Saves that outlive the run (harness.vm.savecache), across real pytest processes.

One cold boot serves the module: the first child run boots and keeps its save,
every later run restores it. The spec is this module's own (a marker file in
the extra configuration), so the first run is cold whatever the cache holds, and
its saves are removed at the end.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from harness.vm import savecache, storage
from tests.helpers import REPO

pytestmark = pytest.mark.vm

PROBE = str(REPO / "tests/driver/warm_probe.py")


def _probe(distro: str, mark: str, out: Path, meet: Path | None = None
           ) -> subprocess.Popen:
    env = {**os.environ, "WARM_PROBE_MARK": mark, "WARM_PROBE_OUT": str(out),
           **({"WARM_PROBE_MEET": str(meet)} if meet else {})}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             f"--distro={distro}", "--offline", "-o", "log_cli=true",
                             "--log-cli-level=WARNING", PROBE],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _run(distro: str, mark: str, tmp: Path, name: str) -> dict:
    """One child pytest run to its end; its probe record and log."""
    proc = _probe(distro, mark, tmp / f"{name}.json")
    log = proc.communicate(timeout=1200)[0]
    assert proc.returncode == 0, log[-4000:]
    return {**json.loads((tmp / f"{name}.json").read_text()), "log": log}


@pytest.fixture(scope="module")
def warm(distro, local_image, tmp_path_factory, libvirt_conn) -> dict:
    """A cold run that keeps its save, then a warm run in a new process."""
    tmp = tmp_path_factory.mktemp("warm")
    mark = secrets.token_hex(8)
    cold = _run(distro.name, mark, tmp, "cold")
    second = _run(distro.name, mark, tmp, "warm")
    yield {"mark": mark, "tmp": tmp, "distro": distro.name, "cold": cold, "warm": second}
    savecache.SaveCache(libvirt_conn).discard(cold["key"])


def test_second_run_starts_warm_from_the_first_runs_save(warm):
    cold, second = warm["cold"], warm["warm"]
    # Restored from the kept save (its template is the cache's), not booted; how much
    # faster that is belongs to the bench (`make bench`: warm_start).
    assert not cold["warm"] and second["warm"]
    assert cold["key"] == second["key"]


def test_kept_save_is_private_and_survives_the_runs_that_used_it(warm, libvirt_conn):
    entry = savecache.SaveCache(libvirt_conn).entry(warm["cold"]["key"])
    assert (entry.stat().st_mode & 0o777) == 0o700
    for path in [entry / "memory.save", entry / "meta.json", *(entry / "keys").iterdir()]:
        assert (path.stat().st_mode & 0o077) == 0, f"{path} readable by others"
    pool = storage.pool(libvirt_conn)
    storage.refresh(pool)
    names = {v.name() for v in pool.listAllVolumes(0)}
    assert savecache.SaveCache(libvirt_conn).volume(warm["cold"]["key"], "disk.qcow2") in names


def test_two_runs_restore_the_same_save_at_once(warm):
    tmp, mark = warm["tmp"], warm["mark"]
    meet = tmp / "meet"  # each run waits there, up, for the other: both up at once
    meet.mkdir()
    procs = [(_probe(warm["distro"], mark, tmp / f"par{i}.json", meet), i) for i in (1, 2)]
    for proc, _ in procs:
        log = proc.communicate(timeout=1200)[0]
        assert proc.returncode == 0, log[-4000:]
    a, b = (json.loads((tmp / f"par{i}.json").read_text()) for i in (1, 2))
    assert a["warm"] and b["warm"]
    assert a["domain"] != b["domain"] and a["uuid"] != b["uuid"]
    assert a["met"] == b["met"] == 2, "they were not up at once"


def test_broken_save_falls_back_to_a_cold_boot_and_is_replaced(warm, libvirt_conn):
    cache = savecache.SaveCache(libvirt_conn)
    key = warm["cold"]["key"]
    memory = cache.entry(key) / "memory.save"
    # A save QEMU cannot load, as after an upgrade in place: the memory stream cut short.
    os.truncate(memory, memory.stat().st_size // 2)
    broken = json.loads((cache.entry(key) / "meta.json").read_text())["created"]
    run = _run(warm["distro"], warm["mark"], warm["tmp"], "fallback")
    assert not run["warm"], "the broken save was used"
    assert run["log"].count("does not restore") == 1, run["log"][-4000:]
    assert json.loads((cache.entry(key) / "meta.json").read_text())["created"] > broken
    after = _run(warm["distro"], warm["mark"], warm["tmp"], "after")
    assert after["warm"] and after["key"] == key
