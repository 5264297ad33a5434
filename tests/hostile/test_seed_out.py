"""`harness seed --out` as root in a folder another user can plant names in (issue 31,
item 14): a planted `keys` symlink never makes root write keys where it points."""

import os

import pytest
from hostile_helpers import NOBODY

from harness import cli
from harness.seed import keys


@pytest.fixture
def victim(tmp_path):
    """A folder of root's with a host key an attacker wants overwritten."""
    path = tmp_path / "victim"
    path.mkdir(mode=0o700)
    (path / "ssh_host_ed25519_key").write_text("root's real key")
    return path


def test_seed_out_folder_of_another_user_is_refused(tmp_path, victim, caplog):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    (out / "keys").symlink_to(victim)
    os.chown(out, NOBODY, NOBODY)
    os.lchown(out / "keys", NOBODY, NOBODY)
    assert cli.main(["seed", "refos", "--out", str(out)]) == 2
    assert (victim / "ssh_host_ed25519_key").read_text() == "root's real key"
    assert f"--out {out}" in caplog.text and f"owned by uid {NOBODY}" in caplog.text


def test_seed_out_with_a_keys_symlink_is_refused(tmp_path, victim, caplog):
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    (out / "keys").symlink_to(victim)
    assert cli.main(["seed", "refos", "--out", str(out)]) == 2
    assert (victim / "ssh_host_ed25519_key").read_text() == "root's real key"
    assert "not a plain folder" in caplog.text


def test_a_key_file_symlink_is_never_written_through(tmp_path, victim):
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    (keydir / "ssh_host_ed25519_key").symlink_to(victim / "ssh_host_ed25519_key")
    with pytest.raises(OSError):
        keys.generate(keydir, "ssh_host_ed25519_key", "test")
    assert (victim / "ssh_host_ed25519_key").read_text() == "root's real key"
