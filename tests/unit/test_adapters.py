"""Each update adapter's parsing of its tool's output, on samples written here in
the shape the tool's upstream documents (the source of each shape is noted), and
the choice of adapter from the catalog's `promises.update`."""

import dataclasses

import pytest

from harness import catalog, registry
from harness.updates import (
    NeedsNetwork,
    NetworkUpdater,
    NotStaged,
    NoUpdater,
    PreconditionMissing,
    Refused,
    adapter_class,
    pytest_verdict,
    ros,
    update_engine,
    updater,
)
from harness.vm.ssh import Result


# The disk layout (build_library/disk_layout.json, coreos/scripts @ a6824e7b and
# flatcar/scripts @ ab6d76d9): partition 3 is USR-A, 4 is USR-B; `rootdev -s /usr` names
# one. The device names are examples of virtio, SCSI and NVMe disks.
@pytest.mark.parametrize(("device", "slot"), [("/dev/sda3\n", "USR-A"), ("/dev/vda4", "USR-B"),
                                              ("/dev/nvme0n1p4", "USR-B")])
def test_rootdev_partition_number_tells_the_usr_slot(device, slot):
    assert update_engine.usr_slot(device) == slot


def test_a_partition_that_is_no_usr_slot_is_refused():
    with pytest.raises(ValueError, match="not a USR partition"):
        update_engine.usr_slot("/dev/sda9")


def test_kernel_command_line_names_the_usr_source_in_either_spelling():
    # Flatcar: `@@MOUNTUSR@@=PARTUUID=$usr_uuid` in build_library/grub.cfg, which
    # build_library/grub_install.sh turns into `mount.usr=/dev/mapper/usr verity.usr`
    # when verity is on (flatcar/scripts @ ab6d76d9). CoreOS 647:
    # `mount.usr=PARTUUID=$usr_uuid` (coreos/scripts build_library/grub.cfg since a45ba5dc,
    # 2014-12). `usr=` is what CoreOS's GRUB passed before that commit.
    flatcar = ("BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=/dev/mapper/usr "
               "verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 rootflags=rw")
    coreos = ("root=LABEL=ROOT console=ttyS0,115200n8 console=tty0 "
              "mount.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c")
    before_a45ba5dc = "root=LABEL=ROOT usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c"
    assert update_engine.cmdline_usr(flatcar) == "/dev/mapper/usr"
    assert update_engine.cmdline_usr(coreos) == "PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c"
    assert update_engine.cmdline_usr(before_a45ba5dc) == update_engine.cmdline_usr(coreos)


def test_os_release_version_is_read_quoted_or_not():
    # /usr/lib/os-release as the images write it (build_library/set_lsb_release):
    # Flatcar quotes VERSION="$FLATCAR_VERSION" (flatcar/scripts @ ab6d76d9); CoreOS 647
    # wrote VERSION=$COREOS_VERSION_STRING unquoted (coreos/scripts @ a6824e7b).
    flatcar = 'NAME="Flatcar Container Linux by Kinvolk"\nID="flatcar"\nVERSION="3815.2.0"\n'
    assert update_engine.os_release_version(flatcar) == "3815.2.0"
    assert update_engine.os_release_version("NAME=CoreOS\nID=coreos\nVERSION=647.0.0\n") \
        == "647.0.0"




# ros -v as quoted in rancher/os#2311 ("version v1.4.0-rc1 from os image
# rancher/os:v1.4.0-rc1"), the VersionPrinter of rancher/os commit 480e45cd (first in
# v1.2.0-rc1); before it, codegangsta/cli's printVersion, "%v version %v" of app.Name
# (os.Args[0]) and the version (rancher/os v1.1.0 vendor/github.com/codegangsta/cli/
# help.go, cmd/control/cli.go); `ros os version` is fmt.Println(config.Version)
# (rancher/os v1.5.8 and v1.1.0 cmd/control/os.go, osVersion).
@pytest.mark.parametrize(("text", "version"), [
    ("v1.5.8\n", "v1.5.8"),
    ("version v1.4.0-rc1 from os image rancher/os:v1.4.0-rc1\n", "v1.4.0-rc1"),
    ("ros version v1.1.0\n", "v1.1.0"),
    ("/usr/bin/ros version v1.1.0\n", "v1.1.0"),
])
def test_ros_version_in_any_of_its_forms(text, version):
    assert ros.parse_version(text) == version


@pytest.mark.parametrize("text", ["", "ros\n", "no version here\n"])
def test_ros_version_that_is_no_version_is_an_error_naming_the_text(text):
    with pytest.raises(ValueError, match="ros printed"):
        ros.parse_version(text)


# `sudo ros os list` on v1.1.0, as rancher/os#2139 quotes it (shortened): newest first.
ROS_LIST = """rancher/os:v1.1.0 local latest running
rancher/os:v1.0.4 local available
rancher/os:v1.0.3 local available
rancher/os:v1.0.2 remote available
"""
# v0.8.0-rc4, not in the list, as rancher/os#148 quotes it (shortened): the bare
# `VERSION running` line of osMetaDataGet (rancher/os v1.5.8 cmd/control/os.go).
ROS_LIST_UNLISTED = """rancher/os:v0.7.1 remote latest
rancher/os:v0.7.0 remote available
rancher/os:v0.6.1 remote available
v0.8.0-rc4 running
"""
# v0.2.1's `rancherctl os list` as rancher/os#147 quotes it: `IMAGE remote|local` in
# releases.yml's order, which v0.3.3's `ros os list` still printed (cmd/control/os.go).
ROS_LIST_03 = """rancher/os:v0.1.2 remote
rancher/os:v0.2.0-rc1 remote
rancher/os:v0.2.0 local
rancher/os:v0.2.1 remote
rancher/os:v0.3.0-rc1 remote
"""


def test_ros_os_list_is_newest_first_and_marks_the_running_image():
    images = ros.parse_list(ROS_LIST)
    assert [i.version for i in images] == ["v1.1.0", "v1.0.4", "v1.0.3", "v1.0.2"]
    assert ros.running(images).image == "rancher/os:v1.1.0"
    assert ros.newest(images).image == "rancher/os:v1.1.0"


def test_ros_newest_is_the_first_line_when_none_is_marked_latest():
    images = ros.parse_list(ROS_LIST.replace(" latest", " available"))
    assert ros.newest(images).image == "rancher/os:v1.1.0"


def test_ros_running_version_missing_from_the_list_is_the_bare_line():
    images = ros.parse_list(ROS_LIST_UNLISTED)
    assert ros.running(images) == ros.OsImage("v0.8.0-rc4", ("running",))
    assert ros.newest(images).image == "rancher/os:v0.7.1"


def test_ros_03_marks_nothing_so_version_and_numbers_decide():
    images = ros.parse_list(ROS_LIST_03)
    assert ros.running(images, "v0.2.0").image == "rancher/os:v0.2.0"
    assert ros.newest(images).image == "rancher/os:v0.3.0-rc1"
    with pytest.raises(ValueError, match=r"v0\.3\.3"):
        ros.running(images, "v0.3.3")


def test_ros_upgrade_names_the_image_and_does_not_reboot_by_itself():
    assert ros.upgrade_command("rancher/os:v1.5.7") == \
        "ros os upgrade -f --no-reboot -i rancher/os:v1.5.7"


class Guest:
    """Answers commands with recorded outputs: a stand-in to inject ros's failures,
    since no RancherOS guest boots here and the outcome depends on the output alone."""

    LISTED = "rancher/os:v1.5.9 remote latest\nrancher/os:v1.5.8 local available running\n"

    def __init__(self, failing: str, stderr: str, status: int = 1, stdout: str = ""):
        self.failing, self.stderr, self.status, self.stdout = failing, stderr, status, stdout

    def run(self, cmd, timeout=None):
        if cmd.startswith(self.failing):
            return Result(self.status, self.stdout, self.stderr)
        return Result(0, {"ros os version": "v1.5.8\n", "ros os list": self.LISTED}.get(cmd, ""),
                      "")

    def succeed(self, cmd, timeout=None):
        return self.run(cmd).stdout


# osUpgrade's refusal (rancher/os v1.5.8 cmd/control/os.go), as logrus prints Fatalf.
NO_GLOBAL_CFG = 'time="2020-03-01T10:00:00Z" level=fatal msg="ros upgrade cannot be supported"'
# A lookup the guest cannot make, in Go's net error form (see harness.updates).
NO_DNS = ("level=fatal msg=\"Get https://releases.rancher.com/os/releases.yml: dial tcp: "
          "lookup releases.rancher.com on 10.0.2.3:53: no such host\"")


def test_ros_upgrade_without_global_cfg_is_a_missing_precondition_not_network():
    adapter = updater(catalog.get("rancheros"))
    with pytest.raises(PreconditionMissing, match=r"/boot/global\.cfg") as e:
        adapter.stage(Guest("ros os upgrade", NO_GLOBAL_CFG))
    assert not isinstance(e.value, NeedsNetwork)
    assert pytest_verdict(e.value) == ("skip", f"missing precondition: {e.value}")


def test_ros_list_that_cannot_reach_the_server_needs_network():
    adapter = updater(catalog.get("rancheros"))
    with pytest.raises(NeedsNetwork, match="could not be reached"):
        adapter.stage(Guest("ros os list", NO_DNS))


def test_an_unexplained_failure_is_a_refusal_and_fails_the_suite():
    adapter = updater(catalog.get("rancheros"))
    with pytest.raises(Refused) as e:
        adapter.stage(Guest("ros os upgrade", "level=fatal msg=boom"))
    assert pytest_verdict(e.value)[0] == "fail"


# An ISO-booted v0.3.0-rc3 that was never installed, as rancher/os#194 quotes it: the
# installer script's `mount -L RANCHER_STATE` (rancher/os scripts/installer/lay-down-os,
# mount_device) and ros's "Upgrade failed" with the container's exit status (rancher/os
# v0.3.3 cmd/control/os.go, startUpgradeContainer). The spacing around "=" is as the
# issue shows it; the form without spaces is checked too.
NO_STATE_03 = ('+ mount -L RANCHER_STATE /mnt/new_img\n'
               'mount: can\'t find LABEL = "RANCHER_STATE"\nERRO[0078] Upgrade failed')
# The same on v1.x (v1.1.2-rc2, as rancher/os#2190 quotes it): the Go installer found
# no RANCHER_BOOT or RANCHER_STATE partition, so lsblk got an empty name (rancher/os
# v1.5.0 cmd/control/install/install.go, MountDevice), and ros still exited 0.
NO_STATE_1X = ('os-upgrade_1 | Installing from :v1.1.2-rc2\n'
               'os-upgrade_1 | lsblk: : not a block device\n'
               'os-upgrade_1 | time="2017-12-25T09:22:38Z" level=error msg="error layDownOS '
               'exit status 32"\n'
               'os-upgrade_1 | time="2017-12-25T09:22:38Z" level=fatal msg="Failed to run '
               'install" err="exit status 32"\n')
# Constructed, no quoted sample: v0.4.0 to v0.9.x ran lay-down-os in the container
# (rancher/os#1374 shows it, v0.6.1, `os-upgrade_1 | ` prefixed) and ros exited 0
# whatever it did (see INSTALL_FAILED below), so #194's mount line comes with exit 0.
NO_STATE_04 = ('os-upgrade_1 | + mount -L RANCHER_STATE /mnt/new_img\n'
               'os-upgrade_1 | mount: can\'t find LABEL = "RANCHER_STATE"\n')


@pytest.mark.parametrize(("status", "out", "err"), [
    (1, "", NO_STATE_03),
    (1, "", NO_STATE_03.replace("LABEL = ", "LABEL=")),
    (0, NO_STATE_04, ""),
    (0, NO_STATE_1X, ""),
])
def test_ros_upgrade_of_a_system_never_installed_is_a_missing_precondition(status, out, err):
    adapter = updater(catalog.get("rancheros"))
    with pytest.raises(PreconditionMissing, match="Install it to a disk first") as e:
        adapter.stage(Guest("ros os upgrade", err, status, out))
    assert pytest_verdict(e.value)[0] == "skip"


# The installer's failure, as rancher/os#1552 quotes it (v0.8.0-rc6 on docker-machine,
# shortened): `ros install`'s log.Fatal("Failed to run install") (rancher/os v1.5.8
# cmd/control/install.go, installAction) inside the os-upgrade container, whose exit
# status startUpgradeContainer never reads (rancher/os v1.5.8 cmd/control/os.go; so
# since commit 9d76b79a, first in v0.4.0), so `ros os upgrade -f --no-reboot` exits 0.
# Its partition was "1", not empty: not the never-installed case above.
INSTALL_FAILED = ('Upgrading to rancher/os:v0.8.0-rc6\n'
                  'os-upgrade_1 | Installing from :v0.8.0-rc6\n'
                  'os-upgrade_1 | lsblk: 1: not a block device\n'
                  'os-upgrade_1 | > time="2017-01-26T10:48:31Z" level=error msg="error '
                  'layDownOS exit status 32"\n'
                  'os-upgrade_1 | > time="2017-01-26T10:48:31Z" level=fatal msg="Failed to '
                  'run install" err="exit status 32"\n')


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_ros_upgrade_that_exits_0_after_its_installer_failed_is_not_staged(stream):
    adapter = updater(catalog.get("rancheros"))
    out, err = (INSTALL_FAILED, "") if stream == "stdout" else ("", INSTALL_FAILED)
    with pytest.raises(Refused, match="Failed to run install") as e:
        adapter.stage(Guest("ros os upgrade", err, 0, out))
    assert pytest_verdict(e.value)[0] == "fail"


def test_ros_upgrade_whose_installer_succeeded_is_staged():
    done = "Upgrading to rancher/os:v1.5.9\nos-upgrade_1 | Installing from :v1.5.9\n"
    adapter = updater(catalog.get("rancheros"))
    assert adapter.stage(Guest("ros os upgrade", "", 0, done)).version == "v1.5.9"


def test_three_outcomes_are_three_classes():
    assert {NeedsNetwork, PreconditionMissing, Refused} <= set(NotStaged.__subclasses__())
    assert not issubclass(NeedsNetwork, (PreconditionMissing, Refused))
    assert not issubclass(NeedsNetwork, NoUpdater)


# The catalog decides the adapter; a mechanism that downloads says so before booting.
ADAPTERS = {"refos": "Refos", "flatcar": "UpdateEngine", "coreos-647": "UpdateEngine",
            "fedora-coreos": "Ostree", "atomic-f22": "Ostree", "refos-ostree": "Ostree",
            "snappy-1504": "Snappy", "ubuntu-core-24": "Snap", "rancheros": "Ros",
            "burmillaos": "Ros"}


@pytest.mark.parametrize(("name", "adapter"), sorted(ADAPTERS.items()))
def test_each_update_mechanism_has_its_adapter(name, adapter):
    assert type(updater(catalog.get(name))).__name__ == adapter


@pytest.mark.parametrize("mechanism", sorted(registry.UPDATE_ADAPTERS))
def test_every_adapter_the_registry_names_exists_with_the_updater_verbs(mechanism):
    cls = adapter_class(mechanism)
    assert isinstance(cls, type)
    assert all(callable(getattr(cls, verb, None))
               for verb in ("status", "stage", "rollback"))


@pytest.mark.parametrize("name", ["photon-5", "photon-tp"])
def test_tdnf_has_no_adapter_and_says_why_in_the_distros_terms(name):
    with pytest.raises(NoUpdater, match=f"{name}: tdnf updates are not transactional"):
        updater(catalog.get(name))


def test_networked_adapter_explains_it_cannot_stage_offline():
    adapter = updater(catalog.get("rancheros"))
    assert isinstance(adapter, NetworkUpdater)
    assert adapter.offline_reason() == ("rancheros: ros os upgrade fetches updates from "
                                        "Docker Hub (the OS images); the guest has no "
                                        "network (restrict=on)")


def test_a_catalog_note_on_updates_takes_precedence_in_the_distros_terms():
    d = catalog.get("rancheros")
    noted = dataclasses.replace(d, promises=dataclasses.replace(
        d.promises, notes={"update": "the OS images left Docker Hub"}))
    assert updater(noted).offline_reason() == ("rancheros: the OS images left Docker Hub; "
                                               "the guest has no network (restrict=on)")


@pytest.mark.parametrize("name", ["flatcar", "coreos-647"])
def test_usr_ab_distros_stage_offline(name):
    assert not isinstance(updater(catalog.get(name)), NetworkUpdater)


# refos-status's ENTRY lines (images/refos/overlay/usr/sbin/refos-status): after the
# broken slot B used up its two tries, systemd-boot has renamed its entry to +0-2.
REFOS_AFTER_FALLBACK = """SLOT=a
VERSION=1
BUILD_ID=refos-sample
ENTRY=refos-a.conf generation=1 version=1
ENTRY=refos-b+0-2.conf generation=2 version=3
"""
REFOS_STAGED_NOT_TRIED = REFOS_AFTER_FALLBACK.replace("refos-b+0-2.conf", "refos-b+2.conf")


def test_refos_tells_a_slot_the_boot_loader_tried_and_gave_up_on():
    from harness.updates import refos

    assert refos.abandoned_slots(REFOS_AFTER_FALLBACK) == {"b"}
    assert refos.abandoned_slots(REFOS_STAGED_NOT_TRIED) == set()  # never booted: not tried
    assert refos.abandoned_slots(REFOS_AFTER_FALLBACK.replace("+0-2", "+1-1")) == set()
