"""The command line given names it should not trust: nothing is deleted outside
what the run made, and bad paths are usage errors that name the path."""

import logging
from pathlib import Path

import pytest

from harness import cli


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """An artifacts folder with a victim folder beside it and a file inside it."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("keep me")
    (tmp_path / "artifacts" / "other-distro").mkdir(parents=True)
    return tmp_path / "artifacts"


def _run(artifacts: Path, distro: str) -> int:
    return cli.main(["run", "--distro", distro, "--artifacts", str(artifacts)])


def test_run_refuses_distro_that_escapes_artifacts(artifacts, caplog):
    assert _run(artifacts, "../victim") == 2
    assert (artifacts.parent / "victim" / "precious.txt").read_text() == "keep me"
    assert "unknown distro '../victim'" in caplog.text


def test_run_refuses_absolute_distro_path(artifacts, caplog):
    victim = artifacts.parent / "victim"
    assert _run(artifacts, str(victim)) == 2
    assert (victim / "precious.txt").exists()


def test_run_refuses_empty_distro_that_names_the_artifacts_folder(artifacts):
    assert _run(artifacts, "") == 2
    assert (artifacts / "other-distro").is_dir()


def test_fresh_folder_never_empties_anything_but_a_direct_child(tmp_path):
    """The guard behind `harness run`, for a catalog name that would escape."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "artifacts").mkdir()
    for name in ("..", "../victim", "", ".", "a/../../victim"):
        with pytest.raises(cli.UsageError):
            cli.fresh_folder(tmp_path / "artifacts", name)
    assert (tmp_path / "victim").is_dir() and (tmp_path / "artifacts").is_dir()


def _seed(tmp_path: Path, *args: str) -> int:
    return cli.main(["seed", "refos", *args])


def test_seed_extra_missing_file_is_a_usage_error(tmp_path, caplog):
    missing = tmp_path / "no-such.yaml"
    assert _seed(tmp_path, "--out", str(tmp_path / "out"), "--extra", str(missing)) == 2
    assert str(missing) in caplog.text and "cannot read" in caplog.text
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_seed_extra_non_utf8_file_is_a_usage_error(tmp_path, caplog):
    latin1 = tmp_path / "extra.yaml"
    latin1.write_bytes("runcmd: [echo caf\xe9]\n".encode("latin-1"))
    assert _seed(tmp_path, "--out", str(tmp_path / "out"), "--extra", str(latin1)) == 2
    assert str(latin1) in caplog.text and "not UTF-8" in caplog.text


def test_seed_out_that_is_a_file_is_a_usage_error(tmp_path, caplog):
    a_file = tmp_path / "out"
    a_file.write_text("not a folder")
    assert _seed(tmp_path, "--out", str(a_file)) == 2
    assert f"--out {a_file}: is a file" in caplog.text
    assert a_file.read_text() == "not a folder"


def test_seed_out_under_proc_is_a_usage_error(tmp_path, caplog):
    assert _seed(tmp_path, "--out", "/proc/self/harness-seed") == 2
    assert "/proc" in caplog.text and "kernel file system" in caplog.text


def test_report_on_missing_folder_is_a_usage_error(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    missing = tmp_path / "no-such-artifacts"
    assert cli.main(["report", str(missing)]) == 2
    assert f"{missing} is not a folder" in caplog.text
    assert not missing.exists()
