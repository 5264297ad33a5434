"""CoreOS and Flatcar: update_engine writes the other of the USR-A/USR-B partitions,
and GPT priority bits choose which one boots (Flatcar's disk layout and manual
rollback pages describe both)."""

import re

from harness.updates import NetworkUpdater, SlotStatus, adapter
from harness.vm import timeouts

# Flatcar's disk layout: partition 3 is USR-A, partition 4 is USR-B.
SLOTS = {"3": "USR-A", "4": "USR-B"}
_PAIR = re.compile(r"\b([A-Z][A-Z_]+)=(\S*)")


def parse_engine_status(text: str) -> dict[str, str]:
    """`update_engine_client -status`: KEY=VALUE pairs (LAST_CHECKED_TIME, PROGRESS,
    CURRENT_OP, NEW_VERSION, NEW_SIZE), possibly behind a log prefix on each line."""
    fields = dict(_PAIR.findall(text))
    if "CURRENT_OP" not in fields:
        raise ValueError(f"update_engine_client status lacks CURRENT_OP: {text!r}")
    return fields


def usr_slot(device: str) -> str:
    """USR-A or USR-B from the partition `rootdev -s /usr` names (/dev/sda4, /dev/vda3)."""
    match = re.search(r"(\d+)$", device.strip())
    if not match or match.group(1) not in SLOTS:
        raise ValueError(f"not a USR partition: {device!r}")
    return SLOTS[match.group(1)]


def cmdline_usr(cmdline: str) -> str:
    """The /usr source the kernel was given: `mount.usr=` (Flatcar) or `usr=` (CoreOS)."""
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


def rollback_command(partition_type: str) -> str:
    """Prioritize the USR partition that did not boot, as the manual-rollback page shows."""
    return (f'cgpt prioritize "$(cgpt find -t {partition_type} | '
            'grep --invert-match "$(rootdev -s /usr)")"')


@adapter("update-engine")
class UpdateEngine(NetworkUpdater):
    mechanism = "update_engine"
    server = "an Omaha update server"

    @property
    def partition_type(self) -> str:
        # cgpt's name for the USR partition type; Flatcar's is assumed from its rename.
        return "flatcar-usr" if self.distro.name.startswith("flatcar") else "coreos-usr"

    def status(self, machine) -> SlotStatus:
        found = machine.run("rootdev -s /usr")
        device = found.stdout
        if found.status != 0:  # no rootdev: resolve what the kernel was told
            source = cmdline_usr(machine.succeed("cat /proc/cmdline"))
            device = machine.succeed(f"blkid -l -o device -t {source}")
        version = os_release_version(machine.succeed("cat /usr/lib/os-release"))
        return SlotStatus(usr_slot(device), version)

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"update_engine cannot stage a {kind!r} payload")
        before = self.status(machine)
        self._staged(machine, "update_engine_client -update", timeouts.get("ready"))
        fields = parse_engine_status(machine.succeed("update_engine_client -status 2>&1"))
        other = "USR-B" if before.slot == "USR-A" else "USR-A"
        return SlotStatus(other, fields.get("NEW_VERSION", ""))

    def rollback(self, machine) -> None:
        machine.succeed(rollback_command(self.partition_type))
