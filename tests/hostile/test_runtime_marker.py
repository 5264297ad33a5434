"""HARNESS_RUNTIME pointed at a folder of other data (issue 31, item 3): the harness
neither sweeps nor chmods what it did not make; only a folder with its marker is its."""

import os

import pytest

from harness import cli, paths


@pytest.fixture
def someones_data(shared_tmp, monkeypatch):
    """A folder of data that looks like a runtime folder: runs/*, ports/*.lock."""
    data = shared_tmp / "data"
    (data / "runs" / "2024").mkdir(parents=True)
    (data / "runs" / "2024" / "notes.txt").write_text("keep me")
    (data / "ports").mkdir()
    (data / "ports" / "8080.lock").write_text("")
    data.chmod(0o755)
    old = os.stat(data / "runs" / "2024").st_mtime - 3600  # looks like a long-dead run
    os.utime(data / "runs" / "2024", (old, old))
    monkeypatch.setenv("HARNESS_RUNTIME", str(data))
    return data


def test_unmarked_runtime_folder_with_data_is_refused_not_chmodded(someones_data):
    with pytest.raises(paths.UnsafeRuntimeDir, match="was not made by the harness"):
        paths.runtime_dir()
    assert os.stat(someones_data).st_mode & 0o777 == 0o755


def test_clean_does_not_sweep_a_folder_it_did_not_make(someones_data, caplog):
    assert cli.main(["clean"]) != 0
    assert (someones_data / "runs" / "2024" / "notes.txt").read_text() == "keep me"
    assert (someones_data / "ports" / "8080.lock").exists()
    assert "was not made by the harness" in caplog.text


def test_a_folder_the_harness_made_carries_its_marker_and_is_reused(runtime):
    assert paths.runtime_dir() == runtime
    assert (runtime / paths.RUNTIME_MARKER).is_file()
    (runtime / "runs").mkdir()
    assert paths.runtime_dir() == runtime  # marked: its own, used again


def test_an_empty_folder_given_is_taken_and_marked(shared_tmp, monkeypatch):
    empty = shared_tmp / "empty"
    empty.mkdir(mode=0o700)
    monkeypatch.setenv("HARNESS_RUNTIME", str(empty))
    assert paths.runtime_dir() == empty
    assert (empty / paths.RUNTIME_MARKER).is_file()
