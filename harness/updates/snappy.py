"""Ubuntu Snappy 15.04: the ubuntu-core part is A/B (system-a and system-b
partitions); `snappy update` fills the other one and `snappy rollback ubuntu-core`
boots the previous one again.

The snappy of 15.04 is canonical/snapd @ f910d72c (ubuntu-snappy 1.0.1-0ubuntu1 for
vivid, 2015-04-23). Its `snappy update` takes no part name ("Update all installed
parts"; extra arguments are ignored, `FIXME: handle (more?) args`,
cmd/snappy/cmd_update.go): it installs every update, prints the verbose list of
what it installed and, when ubuntu-core needs a reboot, a line such as "Reboot to
use the new ubuntu-core." (showRebootMessage, cmd/snappy/cmd_list.go)."""

import re
from dataclasses import dataclass

from harness.updates import NetworkUpdater, SlotStatus
from harness.vm import timeouts

OS_PART = "ubuntu-core"


@dataclass(frozen=True)
class Part:
    name: str
    date: str
    version: str
    developer: str
    active: bool  # `*` after the developer: in use now
    next_boot: bool  # `!` after the developer: in use after the next reboot


DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # formatDate: year-month-day (cmd_list.go)


def parse_list(text: str) -> list[Part]:
    """`snappy list -v`, or what `snappy update` prints: a "Name Date Version
    Developer" table, every installed version of a part on its own row, the active
    one marked `*`, the next one `!` (showVerboseList). Only rows under the header
    with a date count: "Installing ..." before it and "Reboot to use ..." after it
    are not parts."""
    parts, table = [], False
    for line in text.splitlines():
        cols = line.split()
        if cols[:2] == ["Name", "Date"]:
            table = True
            continue
        if not table or len(cols) != 4 or not DATE.fullmatch(cols[1]):
            continue
        developer = cols[3]
        parts.append(Part(cols[0], cols[1], cols[2], developer.rstrip("*!"),
                          developer.endswith("*"), developer.endswith("!")))
    return parts


def os_version(parts: list[Part], next_boot: bool = False) -> str:
    """The ubuntu-core version in use now, or the one the next boot will use."""
    marked = [p for p in parts if p.name == OS_PART and (p.next_boot if next_boot else p.active)]
    if not marked:
        raise ValueError(f"no {'next' if next_boot else 'active'} {OS_PART} in snappy list")
    return marked[0].version


class Snappy(NetworkUpdater):
    mechanism = "snappy"
    server = "the snappy store"

    def status(self, machine) -> SlotStatus:
        # The root filesystem's label names the slot: system-a or system-b (unverified).
        label = machine.succeed("findmnt -no LABEL /").strip()
        return SlotStatus(label, os_version(parse_list(machine.succeed("snappy list -v"))))

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"snappy cannot stage a {kind!r} payload")
        before = self.status(machine)
        self._staged(machine, "snappy update", timeouts.get("ready"))  # every part
        after = parse_list(machine.succeed("snappy list -v"))
        other = {"system-a": "system-b", "system-b": "system-a"}.get(before.slot, "")
        return SlotStatus(other, os_version(after, next_boot=True))

    def rollback(self, machine) -> None:
        machine.succeed(f"snappy rollback {OS_PART}")
