"""CoreOS and Flatcar: update_engine writes the other of the USR-A/USR-B partitions,
and GPT priority bits choose which one boots.

The suites run offline, so `stage` does what kola does to test the same A/B switch
without a server (flatcar/mantle kola/tests/misc/update.go @ f43f4e9c,
RebootIntoUSRB and RecoverBadVerity): copy the booted USR partition onto the other,
give the other the higher GPT priority with one try, reboot into it. The guest
commands, each with its source:

    systemctl mask update-engine.service locksmithd.service ; systemctl stop (the same)
        kola masks both so update_engine does not set the priorities back (update.go,
        disableUpdateEngine)
    rootdev -s /usr ; rootdev -d -s /usr
        the booted USR partition and its disk (flatcar/seismograph src/rootdev/main.c
        @ 7ac56da1: -s follows dm-verity to the partition, -d strips the partition)
    dd if=/dev/disk/by-partlabel/USR-A of=/dev/disk/by-partlabel/USR-B bs=10M status=none
        the copy (update.go)
    cp /boot/flatcar/vmlinuz-a /boot/flatcar/vmlinuz-b
        Flatcar only: its GRUB boots /flatcar/vmlinuz-b for USR-B (flatcar/scripts
        build_library/grub.cfg @ ab6d76d9, function gptprio). CoreOS 647's GRUB loads
        /boot/vmlinuz from inside the USR partition (coreos/scripts
        build_library/grub.cfg @ a6824e7b, function load_coreos), so the copy has it.
    printf '%064d' 0 | dd of=/boot/flatcar/vmlinuz-b bs=1 seek=64 count=64 conv=notrunc
        the `broken` update: overwrite the dm-verity root hash kept at byte 64 of the
        amd64 kernel, so verity refuses USR-B and the boot falls back (update.go,
        RecoverBadVerity; verity.go, getKernelVerityHashOffset)
    cgpt repair DISK ; cgpt add -i N -P 2 -S 0 -T 1 DISK ; cgpt add -i M -P 1 DISK
        the priorities. kola runs `cgpt add -S0 -T1` and `cgpt prioritize` on the
        partition; `cgpt prioritize` only reorders ChromeOS kernel partitions in
        upstream vboot cgpt, so explicit -P values are used: they mean the same to
        every cgpt, CoreOS's of 2015 included, and Debian's cgpt proves them here.

Which partition boots is GRUB's gptprio.next: the highest priority among those
with tries > 0 or successful = 1, taking one try (flatcar/seismograph
src/cgpt/cmd_next.c, the same rule as a command). CoreOS 647 has cgpt but no
dm-verity on its kernel command line (coreos/scripts grub.cfg @ a6824e7b passes
only mount.usr=), so it can be updated and rolled back this way, but no broken
update can be made that its boot refuses by itself.
"""

import re
import shlex
from dataclasses import dataclass

from harness.updates import PreconditionMissing, SlotStatus
from harness.vm import timeouts

# The disk layout of both (coreos/scripts build_library/disk_layout.json @ a6824e7b and
# flatcar/scripts build_library/disk_layout.json @ ab6d76d9): partition 3 is USR-A and 4
# is USR-B, with these partition GUIDs; their type is coreos-rootfs/flatcar-rootfs,
# one GUID (flatcar/seismograph src/firmware/include/gpt.h, GPT_ENT_TYPE_FLATCAR_ROOTFS).
SLOTS = {"3": "USR-A", "4": "USR-B"}
PARTITION = {slot: int(num) for num, slot in SLOTS.items()}
PARTUUID = {"USR-A": "7130c94a-213a-4e5a-8e26-6cce9662f132",
            "USR-B": "e03dd35c-7c2d-4a47-b3fe-27f15780a57c"}
USR_TYPE = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
VERITY_HASH_OFFSET = 64  # amd64 (kola verity.go getKernelVerityHashOffset)
_DISK = re.compile(r"/dev/[A-Za-z0-9/_-]+")


@dataclass(frozen=True)
class UsrLayout:
    """Where a release keeps the kernel of each USR slot, and whether it boots /usr
    through dm-verity."""

    kernel: str  # "" when the kernel lives inside the USR partition
    verity: bool


LAYOUTS = {
    "flatcar": UsrLayout("/boot/flatcar/vmlinuz-{slot}", verity=True),
    "coreos-647": UsrLayout("", verity=False),
}


def other(slot: str) -> str:
    return "USR-B" if slot == "USR-A" else "USR-A"


def usr_slot(device: str) -> str:
    """USR-A or USR-B from the partition `rootdev -s /usr` names (/dev/sda4, /dev/vda3)."""
    match = re.search(r"(\d+)$", device.strip())
    if not match or match.group(1) not in SLOTS:
        raise ValueError(f"not a USR partition: {device!r}")
    return SLOTS[match.group(1)]


def cmdline_usr(cmdline: str) -> str:
    """The /usr source the kernel was given: `mount.usr=` (CoreOS's GRUB since
    coreos/scripts a45ba5dc, 2014-12, and Flatcar's) or the older `usr=`."""
    for arg in cmdline.split():
        key, _, value = arg.partition("=")
        if key in ("mount.usr", "usr") and value:
            return value
    raise ValueError(f"no mount.usr= or usr= on the kernel command line: {cmdline!r}")


def os_release_version(text: str) -> str:
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return fields["VERSION"].strip().strip('"')
    except KeyError:
        raise ValueError(f"os-release lacks VERSION: {text!r}") from None


def copy_commands(booted: str, layout: UsrLayout, broken: bool = False) -> list[str]:
    """Copy the booted USR slot (and its kernel) onto the other; `broken` then
    spoils the copy's verity root hash."""
    target = other(booted)
    cmds = [f"dd if=/dev/disk/by-partlabel/{booted} of=/dev/disk/by-partlabel/{target} "
            "bs=10M status=none"]
    if layout.kernel:
        src, dst = (layout.kernel.format(slot=s[-1].lower()) for s in (booted, target))
        cmds.append(f"cp {src} {dst}")
        if broken:
            cmds.append(f"printf '%064d' 0 | dd of={dst} bs=1 seek={VERITY_HASH_OFFSET} "
                        "count=64 conv=notrunc status=none")
    return cmds


def try_once_commands(disk: str, slot: str) -> list[str]:
    """Boot `slot` next, once: priority above the other, not yet successful, one try.
    Should that boot fail, GRUB has no tries left for it and boots the other."""
    d = shlex.quote(disk)
    return [f"cgpt repair {d}",
            f"cgpt add -i {PARTITION[slot]} -P 2 -S 0 -T 1 {d}",
            f"cgpt add -i {PARTITION[other(slot)]} -P 1 {d}"]


def prefer_commands(disk: str, slot: str) -> list[str]:
    """Boot `slot` next and after: it gets the higher priority; its successful flag,
    set when it booted well before, is kept."""
    d = shlex.quote(disk)
    return [f"cgpt add -i {PARTITION[slot]} -P 2 {d}",
            f"cgpt add -i {PARTITION[other(slot)]} -P 1 {d}"]


@dataclass(frozen=True)
class Attributes:
    priority: int
    tries: int
    successful: int


def next_boot(table: dict[str, Attributes]) -> str:
    """The slot GRUB's gptprio.next boots: highest priority among those with tries
    left or a successful boot (flatcar/seismograph src/cgpt/cmd_next.c)."""
    bootable = [(a.priority, slot) for slot, a in table.items()
                if a.priority > 0 and (a.tries > 0 or a.successful)]
    if not bootable:
        raise ValueError(f"no USR partition is bootable: {table}")
    return max(bootable)[1]


class UpdateEngine:
    mechanism = "update_engine"
    server = "an Omaha update server"

    def __init__(self, distro):
        self.distro = distro
        self.layout = LAYOUTS.get(distro.name) or LAYOUTS.get(distro.name.split("-")[0])

    def status(self, machine) -> SlotStatus:
        found = machine.run("rootdev -s /usr")
        device = found.stdout
        if found.status != 0:  # no rootdev: resolve what the kernel was told
            source = cmdline_usr(machine.succeed("cat /proc/cmdline"))
            device = machine.succeed(f"blkid -l -o device -t {shlex.quote(source)}")
        version = os_release_version(machine.succeed("cat /usr/lib/os-release"))
        return SlotStatus(usr_slot(device), version)

    def _disk(self, machine) -> str:
        disk = machine.succeed("rootdev -d -s /usr").strip()
        if not _DISK.fullmatch(disk):
            raise ValueError(f"{self.distro.name}: rootdev named no disk: {disk!r}")
        return disk

    def _require_layout(self) -> UsrLayout:
        if self.layout is None:
            raise PreconditionMissing(
                f"{self.distro.name}: no USR A/B layout is recorded for this release "
                "(harness/updates/update_engine.py LAYOUTS); add its kernel path and "
                "whether it boots through dm-verity")
        return self.layout

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """Offline, the kola way: the other slot gets a copy of the booted one."""
        if kind not in ("update", "broken"):
            raise ValueError(f"unknown update kind {kind!r}")
        layout = self._require_layout()
        if kind == "broken":
            self._require_verity(machine, layout)
        before = self.status(machine)
        disk = self._disk(machine)
        machine.succeed("systemctl mask update-engine.service locksmithd.service && "
                        "systemctl stop update-engine.service locksmithd.service")
        for cmd in copy_commands(before.slot, layout, broken=kind == "broken"):
            machine.succeed(cmd, timeout=timeouts.get("ready"))
        for cmd in try_once_commands(disk, other(before.slot)):
            machine.succeed(cmd)
        return SlotStatus(other(before.slot), before.version)

    def _require_verity(self, machine, layout: UsrLayout) -> None:
        """kola skips RecoverBadVerity unless `veritysetup status usr` succeeds."""
        if not layout.verity or machine.run("veritysetup status usr").status != 0:
            raise PreconditionMissing(
                f"{self.distro.name}: /usr is not under dm-verity, so no broken copy "
                "would be refused at boot; its fallback cannot be shown offline")

    def abandoned(self, machine, staged: SlotStatus) -> bool:
        """Whether GRUB tried `staged` and gave up on it: no tries left and never
        successful (gptprio.next takes the try; flatcar/seismograph src/cgpt/cmd_next.c)."""
        disk, n = shlex.quote(self._disk(machine)), PARTITION[staged.slot]
        tries = machine.succeed(f"cgpt show -i {n} -T {disk}").strip()
        successful = machine.succeed(f"cgpt show -i {n} -S {disk}").strip()
        return tries == "0" and successful == "0"

    def rollback(self, machine) -> None:
        booted = self.status(machine).slot
        for cmd in prefer_commands(self._disk(machine), other(booted)):
            machine.succeed(cmd)
