"""Seed media carry the guest's private host key: another local user must not
read them, yet QEMU (another uid under qemu:///system) must get the fw_cfg file."""

import stat
from pathlib import Path

import pytest
from hostile_helpers import other_user_can, paused_domain

from harness import seed
from harness.vm import domain, runs


def _intent(run_keys) -> seed.Intent:
    client, host = run_keys
    return seed.Intent(hostname="guest", user="admin", authorized_keys=(client.public,),
                       host_key=host)


def _media_dir(shared_tmp: Path) -> Path:
    """Like a machine folder: others may traverse it (QEMU must), not list it."""
    d = shared_tmp / "machine"
    d.mkdir(mode=0o711)
    return d


def _unreadable(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not other_user_can(lambda: path.read_bytes())


def test_seed_iso_is_unreadable_by_other_users(run_keys, shared_tmp):
    media = seed.build("nocloud", _intent(run_keys), _media_dir(shared_tmp))
    assert b"PRIVATE KEY" in media.files["user-data"]  # what is at stake
    _unreadable(media.disk)


def test_config_drive_is_unreadable_by_other_users(run_keys, shared_tmp):
    media = seed.build("config-2", _intent(run_keys), _media_dir(shared_tmp))
    _unreadable(media.disk)


def test_ignition_config_is_unreadable_by_other_users(run_keys, shared_tmp):
    media = seed.build("ignition", _intent(run_keys), _media_dir(shared_tmp))
    ((_name, path),) = media.fw_cfg
    _unreadable(path)


def test_private_ignition_config_still_reaches_qemu(run_keys, runtime, libvirt_conn):
    """libvirt hands the 0600 file to QEMU's user while the domain runs (real QEMU,
    started paused: it has read the fw_cfg file by then, or it would not start)."""
    run = runs.Run.start(libvirt_conn)
    dom = None
    try:
        media = seed.build("ignition", _intent(run_keys), run.dir)
        dom = paused_domain(libvirt_conn, run, "ign", fw_cfg=media.fw_cfg)
        assert dom.isActive()
    finally:
        if dom is not None:
            runs.destroy_domain(dom)
        runs.sweep(libvirt_conn, finished=frozenset({run.id}))


def test_fw_cfg_path_with_comma_is_refused_before_qemu_parses_it(tmp_path):
    """QEMU's option parser would split `file=/a,b` into `file=/a` and an option `b`."""
    spec = domain.DomainSpec(
        name="harness-x-y", run_id="x", memory_mib=64, firmware="bios", disks=(),
        console_log=tmp_path / "c.log", ssh_port=2222,
        fw_cfg=(("opt/com.coreos/config", tmp_path / "a,b" / "config.ign"),))
    with pytest.raises(domain.FwCfgPathError, match="a ',' would split"):
        domain.domain_xml(spec)



def test_fw_cfg_file_qemu_cannot_reach_is_a_clear_error(tmp_path):
    """Not QEMU's "Permission denied" at start: the folder is named, and the fix."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    spec = domain.DomainSpec(
        name="harness-x-y", run_id="x", memory_mib=64, firmware="bios", disks=(),
        console_log=tmp_path / "c.log", ssh_port=2222,
        fw_cfg=(("opt/com.coreos/config", private / "config.ign"),))
    with pytest.raises(domain.FwCfgPathError, match=f"cannot pass {private} .mode 0700"):
        domain.domain_xml(spec)
