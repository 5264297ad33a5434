"""Each update adapter's parsing of its tool's output, on samples written here in
the shape the tool's upstream documents (the source of each shape is noted), and
the choice of adapter from the catalog's `promises.update`."""

import json

import pytest

from harness import catalog
from harness.updates import (
    NeedsNetwork,
    NetworkUpdater,
    NoUpdater,
    SlotStatus,
    ros,
    rpm_ostree,
    snap,
    snappy,
    update_engine,
    updater,
)

# update_engine_client -status: KEY=VALUE lines. The keys mirror locksmith's
# updateengine.Status (LastCheckedTime, Progress, CurrentOperation, NewVersion,
# NewSize) and the CURRENT_OP values are update_engine's UpdateStatus names, both as
# listed in their Go package docs; the log prefix is how the client logs when it does.
ENGINE_IDLE = """LAST_CHECKED_TIME=1433372016
PROGRESS=0.000000
CURRENT_OP=UPDATE_STATUS_IDLE
NEW_VERSION=0.0.0
NEW_SIZE=0
"""
ENGINE_NEED_REBOOT = ("I0603 10:41:02.000000 1234 update_engine_client.cc:245] "
                      "LAST_CHECKED_TIME=1433372016\nPROGRESS=1.000000\n"
                      "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\n"
                      "NEW_VERSION=3815.2.0\nNEW_SIZE=302176836\n")


def test_update_engine_status_reads_every_documented_key():
    fields = update_engine.parse_engine_status(ENGINE_IDLE)
    assert fields["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
    assert fields["NEW_VERSION"] == "0.0.0" and fields["LAST_CHECKED_TIME"] == "1433372016"


def test_update_engine_status_tolerates_a_log_prefix():
    fields = update_engine.parse_engine_status(ENGINE_NEED_REBOOT)
    assert fields["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"
    assert fields["NEW_VERSION"] == "3815.2.0"


def test_update_engine_status_without_current_op_is_an_error():
    with pytest.raises(ValueError, match="CURRENT_OP"):
        update_engine.parse_engine_status("Failed to connect to update_engine\n")


# Flatcar's disk layout: partition 3 is USR-A, 4 is USR-B; `rootdev -s /usr` names one.
@pytest.mark.parametrize(("device", "slot"), [("/dev/sda3\n", "USR-A"), ("/dev/vda4", "USR-B"),
                                              ("/dev/nvme0n1p4", "USR-B")])
def test_rootdev_partition_number_tells_the_usr_slot(device, slot):
    assert update_engine.usr_slot(device) == slot


def test_a_partition_that_is_no_usr_slot_is_refused():
    with pytest.raises(ValueError, match="not a USR partition"):
        update_engine.usr_slot("/dev/sda9")


def test_kernel_command_line_names_the_usr_source_in_either_spelling():
    flatcar = ("BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=/dev/mapper/usr "
               "verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 rootflags=rw")
    coreos = "root=LABEL=ROOT usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c console=ttyS0"
    assert update_engine.cmdline_usr(flatcar) == "/dev/mapper/usr"
    assert update_engine.cmdline_usr(coreos) == "PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c"


def test_os_release_version_is_read_unquoted():
    text = 'NAME="Flatcar Container Linux by Kinvolk"\nID=flatcar\nVERSION=3815.2.0\n'
    assert update_engine.os_release_version(text) == "3815.2.0"
    assert update_engine.os_release_version('VERSION="647.0.0"\n') == "647.0.0"


def test_rollback_prioritizes_the_usr_partition_that_did_not_boot():
    cmd = update_engine.rollback_command("flatcar-usr")
    assert cmd.startswith("cgpt prioritize ")
    assert 'cgpt find -t flatcar-usr | grep --invert-match "$(rootdev -s /usr)"' in cmd


# rpm-ostree status --json: a "deployments" list whose objects carry "booted",
# "checksum", "version", "origin", "osname" (fields Zincati and Ansible roles read).
RPM_OSTREE_JSON = json.dumps({"deployments": [
    {"id": "fedora-coreos-b1a6.0", "osname": "fedora-coreos", "booted": False,
     "checksum": "b1a6" + "0" * 60, "version": "40.20240616.3.0",
     "origin": "fedora:fedora/x86_64/coreos/stable", "pinned": False},
    {"id": "fedora-coreos-9c2e.0", "osname": "fedora-coreos", "booted": True,
     "checksum": "9c2e" + "1" * 60, "version": "40.20240602.3.0",
     "origin": "fedora:fedora/x86_64/coreos/stable", "pinned": False},
], "transaction": None})


def test_rpm_ostree_status_json_gives_the_booted_deployment():
    assert rpm_ostree.parse_status_json(RPM_OSTREE_JSON) == \
        SlotStatus("9c2e" + "1" * 60, "40.20240602.3.0")


def test_rpm_ostree_pending_deployment_is_the_first_when_not_booted():
    assert rpm_ostree.parse_pending_json(RPM_OSTREE_JSON).version == "40.20240616.3.0"


def test_rpm_ostree_without_a_booted_deployment_is_an_error():
    with pytest.raises(ValueError, match="no booted deployment"):
        rpm_ostree.parse_status_json('{"deployments": []}')


# ostree admin status: the booted deployment marked `*`, "OSNAME CHECKSUM.SERIAL",
# each followed by indented detail lines (not confirmed on a 2015 Atomic host).
OSTREE_ADMIN = """* fedora-atomic 3b1e4c0a9f.0
    Version: 22.17
    origin refspec: fedora-atomic:fedora-atomic/f22/x86_64/docker-host
  fedora-atomic 8d2f77b10c.0
    Version: 22.16
    origin refspec: fedora-atomic:fedora-atomic/f22/x86_64/docker-host
"""


def test_ostree_admin_status_gives_the_starred_deployment_and_its_version():
    assert rpm_ostree.parse_admin_status(OSTREE_ADMIN) == SlotStatus("3b1e4c0a9f", "22.17")


# snappy list -v (Snappy 15.04): Name Date Version Developer; `*` marks the active
# version of a part, `!` the one active after the next reboot. Shape as 2015 Snappy
# guides printed it; not confirmed here against a 15.04 image.
SNAPPY_LIST = """Name          Date       Version   Developer
ubuntu-core   2015-04-23 2         ubuntu*
ubuntu-core   2015-05-05 3         ubuntu!
docker        2015-04-24 1.6.0.002 canonical*
webdm         2015-04-23 0.5       sideload*
"""


def test_snappy_list_reads_rows_and_their_marks():
    parts = snappy.parse_list(SNAPPY_LIST)
    assert [p.name for p in parts] == ["ubuntu-core", "ubuntu-core", "docker", "webdm"]
    assert parts[2] == snappy.Part("docker", "2015-04-24", "1.6.0.002", "canonical", True, False)


def test_snappy_os_version_now_and_after_the_next_boot():
    parts = snappy.parse_list(SNAPPY_LIST)
    assert snappy.os_version(parts) == "2"
    assert snappy.os_version(parts, next_boot=True) == "3"


def test_snappy_list_without_ubuntu_core_is_an_error():
    with pytest.raises(ValueError, match="ubuntu-core"):
        snappy.os_version(snappy.parse_list("Name Date Version Developer\n"))


# snap list --all: Name Version Rev Tracking Publisher Notes (the header quoted in
# canonical/docker-snap issues); inactive revisions carry `disabled` in Notes, which
# the widely shared clean-up scripts match on.
SNAP_LIST = """Name       Version         Rev    Tracking       Publisher   Notes
core24     20240528        423    latest/stable  canonical✓  base,disabled
core24     20240710        490    latest/stable  canonical✓  base
pc         24-0.1          193    24/stable      canonical✓  gadget
pc-kernel  6.8.0-38.38.1   1889   24/stable      canonical✓  kernel
snapd      2.63            21759  latest/stable  canonical✓  snapd
docker     24.0.5          2915   latest/stable  canonical✓  -
"""

# snap changes: ID Status Spawn Ready Summary, as snapd's authors showed it in 2016
# (the dates contain spaces).
SNAP_CHANGES = """ID   Status  Spawn               Ready               Summary
7    Done    today at 10:02 UTC  today at 10:03 UTC  Refresh "core24" snap
8    Doing   today at 10:10 UTC  -                   Revert "core24" snap
"""


def test_snap_list_reads_columns_and_comma_notes():
    rows = snap.parse_list(SNAP_LIST)
    assert len(rows) == 6
    assert rows[0].notes == ("base", "disabled") and rows[0].disabled
    assert rows[5].notes == ()


def test_snap_base_is_the_enabled_core_revision():
    base = snap.base_snap(snap.parse_list(SNAP_LIST))
    assert (base.name, base.rev, base.version) == ("core24", "490", "20240710")


def test_snap_newest_revision_is_by_number_not_text():
    rows = snap.parse_list(SNAP_LIST.replace(" 490 ", " 1000"))
    assert snap.newest_revision(rows, "core24").rev == "1000"


def test_snap_changes_gives_each_change_its_status():
    assert snap.parse_changes(SNAP_CHANGES) == {"7": "Done", "8": "Doing"}


# ros: `ros -v` as quoted in rancher/os#2311 ("version v1.4.0-rc1 from os image
# rancher/os:v1.4.0-rc1"); `ros os version` prints the bare version; `ros os list`
# prints an image a line followed by its tags (these two shapes not confirmed here).
ROS_LIST = """rancher/os:v1.5.6 remote available
rancher/os:v1.5.7 remote available
rancher/os:v1.5.8 remote latest running
"""


@pytest.mark.parametrize(("text", "version"), [
    ("v1.5.8\n", "v1.5.8"),
    ("version v1.4.0-rc1 from os image rancher/os:v1.4.0-rc1\n", "v1.4.0-rc1"),
])
def test_ros_version_in_either_form(text, version):
    assert ros.parse_version(text) == version


def test_ros_os_list_finds_the_running_image_and_versions():
    images = ros.parse_list(ROS_LIST)
    assert [i.version for i in images] == ["v1.5.6", "v1.5.7", "v1.5.8"]
    assert ros.running(images).image == "rancher/os:v1.5.8"


def test_ros_upgrade_names_the_image_and_does_not_reboot_by_itself():
    assert ros.upgrade_command("rancher/os:v1.5.7") == \
        "ros os upgrade -f --no-reboot -i rancher/os:v1.5.7"


# The catalog decides the adapter; a mechanism that downloads says so before booting.
ADAPTERS = {"refos": "Refos", "flatcar": "UpdateEngine", "coreos-647": "UpdateEngine",
            "fedora-coreos": "RpmOstree", "atomic-f22": "RpmOstree", "snappy-1504": "Snappy",
            "ubuntu-core-24": "Snap", "rancheros": "Ros", "burmillaos": "Ros"}


@pytest.mark.parametrize(("name", "adapter"), sorted(ADAPTERS.items()))
def test_each_update_mechanism_has_its_adapter(name, adapter):
    assert type(updater(catalog.get(name))).__name__ == adapter


@pytest.mark.parametrize("name", ["photon-5", "photon-tp"])
def test_tdnf_has_no_adapter_and_says_why_in_the_distros_terms(name):
    with pytest.raises(NoUpdater, match=f"{name}: tdnf updates are not transactional"):
        updater(catalog.get(name))


def test_networked_adapter_explains_it_cannot_stage_offline():
    adapter = updater(catalog.get("flatcar"))
    assert isinstance(adapter, NetworkUpdater)
    assert adapter.offline_reason() == ("flatcar: update_engine fetches updates from an "
                                        "Omaha update server; the guest has no network "
                                        "(restrict=on)")
    # coreos-647's catalog note, in CoreOS's terms, takes precedence over the default.
    assert "no longer answers" in updater(catalog.get("coreos-647")).offline_reason()
    assert issubclass(NeedsNetwork, NoUpdater)
