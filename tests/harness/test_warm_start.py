"""Saves that outlive the run (harness.vm.savecache), across real pytest processes.

One cold boot serves the module: the first child run boots and keeps its save,
every later run restores it. The recipe is this module's own (a marker file in
the extra configuration), so the first run is cold whatever the cache holds, and
its saves are removed at the end.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.vm import savecache, storage
from tests.helpers import REPO

pytestmark = pytest.mark.vm

PROBE = str(REPO / "tests/harness/warm_probe.py")
# The target is 10 s here on an idle host; a loaded 2-core CI host gets room.
WARM_LIMIT_S = 60.0


def _probe(distro: str, mark: str, out: Path, hold: float = 0.0
           ) -> subprocess.Popen:
    env = {**os.environ, "WARM_PROBE_MARK": mark, "WARM_PROBE_OUT": str(out),
           "WARM_PROBE_HOLD": str(hold)}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             f"--distro={distro}", "--offline", "-o", "log_cli=true",
                             "--log-cli-level=WARNING", PROBE],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _run(distro: str, mark: str, tmp: Path, name: str, hold: float = 0.0) -> dict:
    """One child pytest run to its end; its probe record, with `started` (wall clock)."""
    started = time.time()
    proc = _probe(distro, mark, tmp / f"{name}.json", hold)
    log = proc.communicate(timeout=1200)[0]
    assert proc.returncode == 0, log[-4000:]
    return {**json.loads((tmp / f"{name}.json").read_text()), "started": started, "log": log}


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
    assert not cold["warm"] and second["warm"]
    assert cold["key"] == second["key"]
    cold_s = cold["up_at"] - cold["started"]
    warm_s = second["up_at"] - second["started"]
    print(f"\nfirst command after process start: cold {cold_s:.1f}s, warm {warm_s:.1f}s "
          f"(restore {second['timings']})")
    assert warm_s < WARM_LIMIT_S and warm_s < cold_s / 2


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
    procs = [(_probe(warm["distro"], mark, tmp / f"par{i}.json", hold=30), i) for i in (1, 2)]
    for proc, _ in procs:
        log = proc.communicate(timeout=1200)[0]
        assert proc.returncode == 0, log[-4000:]
    a, b = (json.loads((tmp / f"par{i}.json").read_text()) for i in (1, 2))
    assert a["warm"] and b["warm"]
    assert a["domain"] != b["domain"] and a["uuid"] != b["uuid"]
    assert a["up_at"] < b["down_at"] and b["up_at"] < a["down_at"], "they did not overlap"


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
