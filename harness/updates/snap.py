"""snapd: a snap's revisions sit side by side and one is active; installing a new
revision makes it active, and `snap revert` makes the previous one active again.

Which snap stands for the system: the catalog's `promises.update_target` where the
distro names one (refos-snap: the docker snap, the one thing on it that snapd
updates); otherwise Ubuntu Core's OS snap, its base (core18 ... core24, note `base`)
or, on Ubuntu Core 16, the type-os `core` snap, whose note is `core`
(canonical/snapd cmd/snap/notes.go @ 2.57, Notes.String).

Staging runs offline, the way snapd's own spread tests make a new revision of a
local snap (canonical/snapd tests/main/revert-sideload/task.yaml @ 2.57: a second
`snap install --dangerous` gives x2, `snap revert` goes back to x1): the installed
revision's squashfs (/var/lib/snapd/snaps/NAME_REV.snap) is unpacked, its
meta/snap.yaml gets a new `version:`, `snap pack` packs it and `snap install
--dangerous --no-wait` installs it; `snap watch` waits for the change.

Ubuntu Core: installing or reverting the base or the kernel needs a reboot, and
snapd reboots the machine by itself (canonical/snapd daemon/daemon.go @ 2.57,
HandleRestart on RestartSystem; since 2.59 the change waits in `Wait` for it).
So a `stage` or `rollback` of the base there reboots the guest; the suite's own
reboot then finds it rebooting (unverified: no Ubuntu Core image boots here). The
kernel is not staged: snapd refuses to replace a signed kernel or gadget with an
unasserted one unless the model's grade is dangerous (overlord/snapstate/
check_snap.go @ 2.57, checkGadgetOrKernel), while a base passes that check."""

import re
import shlex
from dataclasses import dataclass

from harness.updates import PreconditionMissing, Refused, SlotStatus
from harness.vm import timeouts

# A change's status (canonical/snapd overlord/state/change.go @ 2.57: Default, Hold,
# Do, Doing, Done, Abort, Undo, Undoing, Undone, Error; `Wait` since 2.59, commit
# 7734ffd1 "o/state: introduce WaitStatus", for a change whose tasks wait for a
# reboot). Status.Ready(): Done, Undone, Hold and Error have finished their attempt.
READY = frozenset({"Done", "Undone", "Hold", "Error"})
REBOOT_PENDING = "Wait"
# A snap version (snap/validate.go @ 2.57, isValidVersion): at most 32 characters.
VERSION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9:.+~-]{0,30}[a-zA-Z0-9+~])?")
BUMP = re.compile(r"\+h(\d+)$")
SNAPS = "/var/lib/snapd/snaps"


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

    @property
    def slot(self) -> str:
        return f"{self.name}@{self.rev}"


def parse_list(text: str) -> list[SnapRow]:
    """`snap list [--all]`: columns Name Version Rev Tracking Publisher Notes through a
    tabwriter (cmd/snap/cmd_list.go @ 2.57); Notes is `-` or a comma list: the type
    (`core` for type os, else base, kernel, gadget, snapd; none for apps), then
    disabled, devmode, try ... (cmd/snap/notes.go). A local snap's Rev is x1, x2 ...
    and its Tracking and Publisher are `-`."""
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or cols[0] == "Name":
            continue
        notes = () if cols[5] == "-" else tuple(cols[5].split(","))
        rows.append(SnapRow(cols[0], cols[1], cols[2], cols[3], cols[4], notes))
    return rows


def active(rows: list[SnapRow], name: str) -> SnapRow:
    found = [r for r in rows if r.name == name and not r.disabled]
    if not found:
        raise ValueError(f"snap list shows no active revision of {name!r}")
    return found[0]


def os_snap(rows: list[SnapRow]) -> SnapRow:
    """Ubuntu Core's OS snap: the active core18 ... core24 base, else the type-os `core`."""
    live = [r for r in rows if not r.disabled]
    for row in live:
        if "base" in row.notes and re.fullmatch(r"core\d+", row.name):
            return row
    for row in live:
        if "core" in row.notes:
            return row
    raise ValueError("snap list shows no Ubuntu Core OS snap (a core18+ base, or `core`)")


def parse_changes(text: str) -> dict[str, str]:
    """`snap changes`: change ID to status; the columns are ID Status Spawn Ready
    Summary (cmd/snap/cmd_changes.go @ 2.57), the dates hold spaces, so only the first
    two columns are read."""
    changes = {}
    for line in text.splitlines():
        match = re.match(r"(\d+)\s+(\S+)\s", line)
        if match:
            changes[match.group(1)] = match.group(2)
    return changes


def unfinished(changes: dict[str, str]) -> dict[str, str]:
    """The changes snapd still works on: not Ready() and not waiting for a reboot."""
    return {i: s for i, s in changes.items() if s not in READY and s != REBOOT_PENDING}


def settled(status: str) -> bool:
    """A change that did its work: Done, or Wait (done, a reboot pending)."""
    return status in ("Done", REBOOT_PENDING)


def bumped(version: str) -> str:
    """The next local version: `+h1` appended, or its number raised (a valid snap
    version: ValueError when it would grow past 32 characters)."""
    m = BUMP.search(version)
    new = f"{version[:m.start()]}+h{int(m.group(1)) + 1}" if m else f"{version}+h1"
    if not VERSION.fullmatch(new):
        raise ValueError(f"cannot make a valid snap version after {version!r}: {new!r}")
    return new


def with_version(snap_yaml: str, version: str) -> str:
    """meta/snap.yaml with its top-level `version:` replaced."""
    new, n = re.subn(r"(?m)^version:.*$", f"version: '{version}'", snap_yaml, count=1)
    if n != 1:
        raise ValueError("meta/snap.yaml has no top-level version: line")
    return new


def compression(superblock: str) -> str:
    """The compression `snap pack` should use to match the installed revision, from
    `unsquashfs -s` ("Compression xz"); snap pack takes xz or lzo
    (cmd/snap/cmd_pack.go @ 2.57; tests/main/snap-pack/task.yaml installs an lzo snap)."""
    m = re.search(r"^Compression (\w+)", superblock, re.MULTILINE)
    return m.group(1) if m and m.group(1) in ("xz", "lzo") else "xz"


def change_id(stdout: str) -> str:
    """The change ID `--no-wait` prints (cmd/snap/wait.go @ 2.57, waitMixin.wait)."""
    found = stdout.strip()
    if not found.isdigit():
        raise ValueError(f"expected a change ID from --no-wait, got {stdout!r}")
    return found


class Snap:
    mechanism = "snapd"

    def __init__(self, distro):
        self.distro = distro

    def _target(self, rows: list[SnapRow]) -> SnapRow:
        name = self.distro.promises.update_target
        return active(rows, name) if name else os_snap(rows)

    def status(self, machine) -> SlotStatus:
        row = self._target(parse_list(machine.succeed("snap list")))
        return SlotStatus(row.slot, row.version)

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """A new local revision of the system snap, repacked from the installed one."""
        if kind != "update":
            raise PreconditionMissing(f"{self.distro.name}: snapd has no broken revision to "
                                      "stage; it undoes a failed install by itself")
        row = self._target(parse_list(machine.succeed("snap list")))
        work = machine.succeed("mktemp -d /var/tmp/harness-repack.XXXXXX").strip()
        try:
            self._repack(machine, row, work)
            self._change(machine, "snap install --dangerous --no-wait "
                         f"{shlex.quote(f'{work}/{row.name}.snap')}")
        finally:
            machine.run(f"rm -rf {shlex.quote(work)}")
        new = active(parse_list(machine.succeed("snap list")), row.name)
        return SlotStatus(new.slot, new.version)

    def _repack(self, machine, row: SnapRow, work: str) -> None:
        if machine.run("command -v unsquashfs").status != 0:
            raise PreconditionMissing(f"{self.distro.name}: unsquashfs is missing (package "
                                      "squashfs-tools); it unpacks the installed revision")
        root, q = f"{work}/root", shlex.quote
        squashfs = q(f"{SNAPS}/{row.name}_{row.rev}.snap")
        machine.succeed(f"unsquashfs -q -n -d {q(root)} {squashfs}", timeout=timeouts.get("ready"))
        meta = f"{root}/meta/snap.yaml"
        text = with_version(machine.succeed(f"cat {q(meta)}"), bumped(row.version))
        machine.succeed(f"cat > {q(meta)}", stdin=text.encode())
        packing = compression(machine.succeed(f"unsquashfs -s {squashfs}"))
        machine.succeed(f"snap pack --compression={packing} {q(root)} "
                        f"--filename={q(work + '/' + row.name + '.snap')}",
                        timeout=timeouts.get("ready"))

    def _change(self, machine, cmd: str) -> str:
        """Start a change with `--no-wait`, `snap watch` it, and return its status;
        Refused when snapd refused it or it failed."""
        started = machine.run(cmd)
        if started.status != 0:
            raise Refused(f"{self.distro.name}: {started.describe(cmd)}")
        ident = change_id(started.stdout)
        watched = machine.run(f"snap watch {ident}", timeouts.get("ready"))
        status = parse_changes(machine.succeed("snap changes")).get(ident, "")
        if not settled(status):
            detail = machine.run(f"snap change {ident}").stdout
            raise Refused(f"{self.distro.name}: change {ident} ({cmd}) is {status or 'gone'}"
                          f"\n{watched.describe('snap watch ' + ident)}\n{detail}")
        return status

    def abandoned(self, machine, staged: SlotStatus) -> bool:
        """Never by itself on refos-snap: an app snap has no trial boot. (Ubuntu Core's
        try-base fallback happens across a reboot and is not staged here.)"""
        return False

    def rollback(self, machine) -> None:
        """`snap revert` to the previous revision; on Ubuntu Core the base's revert
        reboots the machine (see the module docstring)."""
        name = self._target(parse_list(machine.succeed("snap list"))).name
        self._change(machine, f"snap revert --no-wait {shlex.quote(name)}")
        # This snap's changes only: offline, snapd's own "Initialize device" change
        # stays Doing forever (it retries the store; seen on refos-snap).
        left = unfinished(parse_changes(machine.succeed(f"snap changes {shlex.quote(name)}")))
        if left:
            raise Refused(f"{self.distro.name}: snap revert {name} left changes "
                          f"unfinished: {left}")
