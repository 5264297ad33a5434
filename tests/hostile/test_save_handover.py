"""The saves folder in the hands of another user (issue 31, items 1 and 7): a cache
restored under another uid (a CI cache handed to the runner user) is rebuilt, not
trusted; a cache folder another user could change is refused before its saves are
used, so a swap after the check cannot feed root their meta.json."""

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import NOBODY, other_user_can

from harness import paths
from harness.vm import savecache
from harness.vm.session import Options, Session

KEY = "0123456789abcdef0123"
RUNNER = 1001  # the GitHub runner user's uid


def _plant(saves: Path, uid: int) -> None:
    """An entry whose record trusts the planter's host key; all of it theirs."""
    entry = saves / KEY
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"size": 1, "host_public": "planted"}))
    for path in (saves, entry, entry / "meta.json"):
        os.chown(path, uid, uid)


def test_saves_handed_to_another_user_are_rebuilt_not_trusted(shared_tmp, monkeypatch,
                                                              caplog):
    cache = shared_tmp / "cache"
    cache.mkdir(mode=0o700)
    _plant(cache / "saves", RUNNER)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    saves = savecache.SaveCache(None)
    assert saves.load(KEY) is None  # their record is never read
    assert os.stat(saves.root).st_uid == os.geteuid() and not any(saves.root.iterdir())
    aside = [p for p in cache.iterdir() if p.name.startswith(f"saves.uid{RUNNER}.")]
    assert len(aside) == 1 and (aside[0] / KEY / "meta.json").exists()  # kept, not deleted
    assert f"owned by uid {RUNNER}" in caplog.text and "rebuilt" in caplog.text


def _swap(cache: Path) -> None:
    """What the other user does once root checked saves/: put their own in its place."""
    (cache / "saves").rename(cache / "saves.old")
    _plant_as_self(cache / "saves")


def _plant_as_self(saves: Path) -> None:
    (saves / KEY).mkdir(parents=True)
    (saves / KEY / "meta.json").write_text(json.dumps({"size": 1, "host_public": "planted"}))


def test_a_swap_of_saves_after_the_check_never_feeds_root_their_record(shared_tmp,
                                                                      monkeypatch):
    cache = shared_tmp / "cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, NOBODY, NOBODY)  # another user's folder holds root's saves/
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    try:
        saves = savecache.SaveCache(None)
    except paths.UnsafeRuntimeDir as e:
        assert f"owned by uid {NOBODY}" in str(e)
        return  # refused before any use: nothing of theirs is read
    assert other_user_can(lambda: _swap(cache)), "the other user could not swap saves/"
    meta = saves.load(KEY)
    assert meta is None or meta.get("host_public") != "planted"


def test_a_session_on_an_untrusted_cache_runs_without_the_warm_cache(shared_tmp, monkeypatch,
                                                                    runtime, caplog):
    cache = shared_tmp / "cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, RUNNER, RUNNER)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    with Session(Options()) as session:
        assert session.templates is not None and session.templates.cache is None
    assert "the warm cache is not used this run" in caplog.text
    assert not (cache / "saves").exists()


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_cache_folder_others_may_write_is_refused(shared_tmp, monkeypatch, mode):
    cache = shared_tmp / "cache"
    cache.mkdir()
    cache.chmod(mode)
    monkeypatch.setenv("HARNESS_CACHE", str(cache / "inner"))
    with pytest.raises(paths.UnsafeRuntimeDir, match="without the sticky bit"):
        savecache.SaveCache(None)
