"""refos: A/B slots with systemd-boot boot counting (see images/refos)."""

import re

from harness.images import build
from harness.updates import SlotStatus
from harness.vm import timeouts


def abandoned_slots(text: str) -> set[str]:
    """Slots whose boot entry systemd-boot has tried and given up on: in
    `refos-status`'s ENTRY lines, a file name `refos-<slot>+0-<done>.conf` (no tries
    left, <done> used: the file naming of systemd's boot counting,
    https://systemd.io/AUTOMATIC_BOOT_ASSESSMENT/)."""
    found = set()
    for line in text.splitlines():
        m = re.match(r"ENTRY=refos-([ab])\+0-(\d+)\.conf\b", line)
        if m and int(m.group(2)) > 0:
            found.add(m.group(1))
    return found


def parse_status(text: str) -> SlotStatus:
    """Read `refos-status` output (KEY=VALUE lines)."""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return SlotStatus(fields["SLOT"], fields["VERSION"])
    except KeyError as e:
        raise ValueError(f"refos-status output lacks {e}: {text!r}") from None


class Refos:
    """refos-update / refos-rollback / refos-status, the tools the recipe installs."""

    def __init__(self, distro=None):
        self.distro = distro

    def status(self, machine) -> SlotStatus:
        return parse_status(machine.succeed("refos-status"))

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """Hand the recipe's payload to refos-update through a hot-plugged disk;
        returns what should boot next."""
        before = self.status(machine)
        built = build.artifacts()
        payload = built.payload(kind, machine.distro.image.build)
        device = machine.attach_disk(payload, f"payload-{kind}")
        machine.succeed(f"refos-update {device}", timeout=timeouts.get("ready"))
        other = {"a": "b", "b": "a"}[before.slot]
        return SlotStatus(other, built.manifest()["versions"][kind])

    def abandoned(self, machine, staged: SlotStatus) -> bool:
        """Whether the boot loader tried `staged` and fell back from it by itself."""
        return staged.slot in abandoned_slots(machine.succeed("refos-status"))

    def rollback(self, machine) -> None:
        machine.succeed("refos-rollback")
