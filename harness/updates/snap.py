"""Ubuntu Core (snapd): the OS is the base snap; `snap refresh` installs a new
revision beside the old one, and `snap revert` makes the previous revision active."""

import re
from dataclasses import dataclass

from harness.updates import NetworkUpdater, SlotStatus, adapter
from harness.vm import timeouts


@dataclass(frozen=True)
class SnapRow:
    name: str
    version: str
    rev: str
    tracking: str
    publisher: str
    notes: tuple[str, ...]

    @property
    def disabled(self) -> bool:
        return "disabled" in self.notes


def parse_list(text: str) -> list[SnapRow]:
    """`snap list --all`: columns Name Version Rev Tracking Publisher Notes; Notes is
    `-` or a comma list (base, kernel, gadget, snapd, disabled for inactive revisions)."""
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or cols[0] == "Name":
            continue
        notes = () if cols[5] == "-" else tuple(cols[5].split(","))
        rows.append(SnapRow(cols[0], cols[1], cols[2], cols[3], cols[4], notes))
    return rows


def base_snap(rows: list[SnapRow]) -> SnapRow:
    """The active revision of the OS's base snap (core, core18 ... core24)."""
    for row in rows:
        if "base" in row.notes and re.fullmatch(r"core\d*", row.name) and not row.disabled:
            return row
    raise ValueError("snap list shows no active core base snap")


def newest_revision(rows: list[SnapRow], name: str) -> SnapRow:
    return max((r for r in rows if r.name == name), key=lambda r: int(r.rev))


def parse_changes(text: str) -> dict[str, str]:
    """`snap changes`: change ID to status (Do, Doing, Done, Error, Undone ...);
    the Spawn and Ready dates hold spaces, so only the first two columns are read."""
    changes = {}
    for line in text.splitlines():
        match = re.match(r"(\d+)\s+(\S+)\s", line)
        if match:
            changes[match.group(1)] = match.group(2)
    return changes


@adapter("snap")
class Snap(NetworkUpdater):
    mechanism = "snapd"
    server = "the Snap Store"

    def status(self, machine) -> SlotStatus:
        base = base_snap(parse_list(machine.succeed("snap list --all")))
        return SlotStatus(f"{base.name}@{base.rev}", base.version)

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        if kind != "update":
            raise NotImplementedError(f"snapd cannot stage a {kind!r} revision")
        name = self.status(machine).slot.split("@")[0]
        self._staged(machine, f"snap refresh {name}", timeouts.get("ready"))
        newest = newest_revision(parse_list(machine.succeed("snap list --all")), name)
        return SlotStatus(f"{newest.name}@{newest.rev}", newest.version)

    def rollback(self, machine) -> None:
        name = self.status(machine).slot.split("@")[0]
        machine.succeed(f"snap revert {name}")
        unfinished = {i: s for i, s in parse_changes(machine.succeed("snap changes")).items()
                      if s in ("Do", "Doing", "Error")}
        if unfinished:
            raise RuntimeError(f"snap revert {name} left changes unfinished: {unfinished}")
