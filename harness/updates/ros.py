"""RancherOS and BurmillaOS: the OS is a container image; `ros os upgrade -i IMAGE`
switches to another image, and nothing reverts a bad one by itself (going back is
an upgrade to the older image).

`ros os list`, as upstream prints it:
- v1.x (rancher/os v1.5.8 cmd/control/os.go, osMetaDataGet): one line per image,
  newest first (the loop runs from the end of releases.yml's `available` list),
  `IMAGE local|remote available|latest [running]`; when the running version is not
  among them, a last line `VERSION running`.
- v0.3.x (rancher/os v0.3.3 cmd/control/os.go, osMetaDataGet): `IMAGE remote|local`
  only, in releases.yml's order, with no latest or running mark; the running
  version comes from `ros os version`.
"""

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from harness.updates import NetworkUpdater, SlotStatus
from harness.vm import timeouts

# rancher/os v1.5.8 cmd/control/os.go osUpgrade: log.Fatalf("ros upgrade cannot be
# supported") unless checkGlobalCfg (cmd/control/util.go) finds
# /proc/1/root/boot/global.cfg, which `ros install` writes (cmd/control/install.go).
NO_GLOBAL_CFG = "ros upgrade cannot be supported"

# Before v1.5.1 (checkGlobalCfg arrived in rancher/os commit 24229f0d, first in
# v1.5.1-rc1), a system booted from the ISO and never installed has no state partition,
# and the upgrade container fails to mount one:
# - up to v0.3.x the installer script runs `mount -L RANCHER_STATE /mnt/new_img`
#   (rancher/os-installer scripts/lay-down-os @ 038170d4, mount_device; in rancher/os
#   scripts/installer/lay-down-os from v0.4.0), and mount answers
#   `mount: can't find LABEL = "RANCHER_STATE"` as rancher/os#194 quotes it (v0.3.0-rc3;
#   which mount printed it, and its exact spacing, unverified: both spacings match);
# - in the Go installer (`ros install -t rancher-upgrade`), MountDevice finds neither
#   RANCHER_BOOT nor RANCHER_STATE, keeps an empty partition name and runs
#   `lsblk -no pkname ""` with its stderr shown (rancher/os v1.1.0 and v1.5.0
#   cmd/control/install/install.go), hence `lsblk: : not a block device`, as
#   rancher/os#2190 quotes it (v1.1.2-rc2 on docker-machine, an ISO boot).
NO_STATE_PARTITION = re.compile(r"can't find LABEL\s*=\s*\"?RANCHER_STATE|"
                                r"lsblk: : not a block device")

# The installer's failure in the upgrade container's log: `ros install` ends with
# log.Fatal("Failed to run install") when runInstall fails (rancher/os v1.5.8
# cmd/control/install.go, installAction), which logrus writes as `level=fatal` in the
# container's log (rancher/os#1552, #2190). startUpgradeContainer (rancher/os v1.5.8
# cmd/control/os.go) returns nil once the container ran, whatever its exit status: it
# stopped reading it in commit 9d76b79a ("Refactor to use libcompose", first in v0.4.0),
# so `ros os upgrade` exits 0 after such a failure, through v1.5.8.
INSTALLER_FAILED = re.compile(r"Failed to run install|level=fatal")

# `ros -v`: from rancher/os commit 480e45cd (first in v1.2.0-rc1, cmd/control/cli.go)
# "version VERSION from os image IMAGE"; before it, codegangsta/cli's printVersion,
# "NAME version VERSION" with NAME = os.Args[0] (rancher/os v1.1.0
# vendor/github.com/codegangsta/cli/help.go, cmd/control/cli.go). `ros os version`
# prints the version alone (rancher/os v0.3.3, v1.1.0 and v1.5.8 cmd/control/os.go,
# osVersion).
VERSION_FORMS = re.compile(r"(?:\S+ )?version (v?\d\S*)(?: from os image \S+)?|(v?\d\S*)")


@dataclass(frozen=True)
class OsImage:
    image: str  # rancher/os:v1.5.8, or a bare version on the `VERSION running` line
    tags: tuple[str, ...]  # local or remote, available or latest, running

    @property
    def version(self) -> str:
        return self.image.rsplit(":", 1)[-1]


def parse_version(text: str) -> str:
    """The version in any form ros prints it (see VERSION_FORMS): `v1.5.8` of
    `ros os version`, `version v1.4.0 from os image rancher/os:v1.4.0` of `ros -v`
    from v1.2.0, `ros version v1.1.0` before it."""
    found = VERSION_FORMS.fullmatch(text.strip())
    if not found:
        raise ValueError(f"ros printed no version in a form it is known to: {text!r}")
    return found[1] or found[2]


def parse_list(text: str) -> list[OsImage]:
    """`ros os list`, in the order printed: an image a line, followed by its tags;
    the bare `VERSION running` line is kept too."""
    images = []
    for cols in map(str.split, text.splitlines()):
        if cols and (":" in cols[0] or cols[1:] == ["running"]):
            images.append(OsImage(cols[0], tuple(cols[1:])))
    return images


def running(images: list[OsImage], version: str = "") -> OsImage:
    """The running image: the one marked `running` (v1.x), else the listed image
    of `version` (v0.3.x marks none)."""
    for image in images:
        if "running" in image.tags:
            return image
    for image in images:
        if version and image.version == version:
            return image
    raise ValueError(f"ros os list marks no image running and lists none of {version!r}")


def _key(image: OsImage) -> Version:
    try:
        return Version(image.version.lstrip("v"))
    except InvalidVersion:
        raise ValueError(f"ros os list: not a release version: {image.image!r}") from None


def newest(images: list[OsImage]) -> OsImage:
    """The newest image: the one marked `latest`, else the first (v1.x prints
    newest first); v0.3.x promises no order and marks nothing, so versions decide."""
    listed = [i for i in images if ":" in i.image]
    if not listed:
        raise ValueError("ros os list lists no image")
    for image in listed:
        if "latest" in image.tags:
            return image
    if any("available" in i.tags for i in listed):
        return listed[0]
    return max(listed, key=_key)


def upgrade_command(image: str) -> str:
    """`-f` skips the prompt and `--no-reboot` leaves the reboot to the harness; both
    flags exist from v0.3.3 (cmd/control/os.go osSubcommands) to v1.5.8."""
    return f"ros os upgrade -f --no-reboot -i {image}"


class Ros(NetworkUpdater):
    mechanism = "ros os upgrade"
    server = "Docker Hub (the OS images)"

    def __init__(self, distro):
        super().__init__(distro)
        self.previous = ""

    def status(self, machine) -> SlotStatus:
        version = parse_version(machine.succeed("ros os version"))
        return SlotStatus(version, version)

    def _precondition(self, output: str) -> str:
        if NO_GLOBAL_CFG in output:
            return ("ros refuses to upgrade without /boot/global.cfg, which `ros install` "
                    "writes to a disk; a system booted from the ISO has none (rancher/os "
                    "v1.5.8 cmd/control/util.go checkGlobalCfg). Install it to a disk first")
        if NO_STATE_PARTITION.search(output):
            return ("the upgrade found no RANCHER_STATE (or RANCHER_BOOT) partition to write "
                    "the new OS to: a system booted from the ISO and never installed has "
                    "none (rancher/os#194, #2190). Install it to a disk first "
                    "(`ros install -d DEVICE`)")
        return ""

    def _failed(self, output: str) -> bool:
        """ros exits 0 whatever its installer did (see INSTALLER_FAILED), so the
        installer's failure, or a state partition it could not find, is read from the
        output."""
        return bool(INSTALLER_FAILED.search(output) or self._precondition(output))

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"ros cannot stage a {kind!r} image")
        images = parse_list(self._staged(machine, "ros os list"))
        current = running(images, self.status(machine).version)
        target = newest(images)
        if target.version == current.version:
            raise ValueError(f"no image newer than {current.image} to upgrade to")
        self.previous = current.image if ":" in current.image else ""
        self._staged(machine, upgrade_command(target.image), timeouts.get("ready"))
        return SlotStatus(target.version, target.version)

    def rollback(self, machine) -> None:
        """No rollback command: upgrade back to the image that ran before `stage`."""
        if not self.previous:
            raise ValueError("nothing staged, or the running image was not listed, so "
                             "no earlier image to go back to")
        self._staged(machine, upgrade_command(self.previous), timeouts.get("ready"))
