"""The snap adapter (snapd) and the Snappy 15.04 adapter read their tools' output.
Samples come from upstream, each naming its source, or were captured from
refos-snap's own snapd (Debian's 2.57.6-1+deb12u1, 2026-11-28), as each says."""

import dataclasses
import shutil
import subprocess

import pytest

from harness import catalog
from harness.updates import SlotStatus, snap, snappy, updater

# --- snap list --------------------------------------------------------------------

# canonical/snapd cmd/snap/cmd_list_test.go @ 2.57, TestList: the table it expects.
SNAPD_LIST_TEST = """Name  Version  Rev  Tracking  Publisher  Notes
foo   4.2      17   stable    bar        -
"""
# The same file, TestListWithNotes: its expected rows (snapd matches them with ` +`
# between columns; single runs of spaces are written here).
SNAPD_LIST_NOTES_TEST = """Name Version Rev Tracking Publisher Notes
foo 4.2 17 - bar try
br1 - 2 - bar broken
dbr1 - 2 - bar disabled,broken
"""
# Ubuntu Core 24 in the shape cmd/snap/cmd_list.go and notes.go @ 2.57 print it: the
# type as the first note, `disabled` for an inactive revision. Values are examples.
CORE24_LIST = """Name       Version         Rev    Tracking       Publisher   Notes
core24     20240528        423    latest/stable  canonical✓  base,disabled
core24     20240710        490    latest/stable  canonical✓  base
pc         24-0.1          193    24/stable      canonical✓  gadget
pc-kernel  6.8.0-38.38.1   1889   24/stable      canonical✓  kernel
snapd      2.63            21759  latest/stable  canonical✓  snapd
docker     24.0.5          2915   latest/stable  canonical✓  -
"""
# Ubuntu Core 16: the OS is the type-os `core` snap, whose note is `core`, not `base`
# (notes.go @ 2.57, Notes.String: `case snap.TypeOS: ns = append(ns, "core")`).
# Values are examples.
CORE16_LIST = """Name       Version    Rev   Tracking       Publisher   Notes
core       16-2.57    13886 latest/stable  canonical✓  core
pc         16.04-0.8  9     16/stable      canonical✓  gadget
pc-kernel  4.4.0-210  1063  16/stable      canonical✓  kernel
"""


def test_snap_list_reads_snapds_own_expected_tables():
    assert snap.parse_list(SNAPD_LIST_TEST) == [
        snap.SnapRow("foo", "4.2", "17", "stable", "bar", ())]
    rows = snap.parse_list(SNAPD_LIST_NOTES_TEST)
    assert [(r.name, r.notes, r.disabled) for r in rows] == [
        ("foo", ("try",), False), ("br1", ("broken",), False),
        ("dbr1", ("disabled", "broken"), True)]


def test_ubuntu_core_24s_system_snap_is_the_active_core_base():
    row = snap.os_snap(snap.parse_list(CORE24_LIST))
    assert (row.slot, row.version) == ("core24@490", "20240710")


def test_ubuntu_core_16s_system_snap_is_the_type_os_core_snap_noted_core():
    row = snap.os_snap(snap.parse_list(CORE16_LIST))
    assert (row.slot, row.notes) == ("core@13886", ("core",))


def test_a_classic_list_without_an_os_snap_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="no Ubuntu Core OS snap"):
        snap.os_snap(snap.parse_list(SNAPD_LIST_TEST))


def test_the_catalog_names_the_snap_that_stands_for_the_system():
    """refos-snap's system is its docker snap; Ubuntu Core's is found in the list."""
    core = updater(catalog.get("ubuntu-core-24"))
    assert core._target(snap.parse_list(CORE24_LIST)).name == "core24"
    d = catalog.get("ubuntu-core-24")
    named = dataclasses.replace(d, promises=dataclasses.replace(d.promises,
                                                                update_target="docker"))
    assert updater(named)._target(snap.parse_list(CORE24_LIST)).slot == "docker@2915"


# refos-snap's `snap list`, captured from its snapd after first boot: local
# revisions x1, no tracking, no publisher.
REFOS_SNAP_LIST = """Name    Version                      Rev  Tracking  Publisher  Notes
core22  12.15                        x1   -         -          base
docker  20.10.24+dfsg1-1+deb12u1+b6  x1   -         -          -
snapd   2.57.6-1+deb12u1+b2          x1   -         -          snapd
"""


# `snap list --all` on refos-snap after the adapter staged x2 and reverted, captured.
REFOS_SNAP_REVERTED = """Name    Version                         Rev  Tracking  Publisher  Notes
core22  12.15                           x1   -         -          base
docker  20.10.24+dfsg1-1+deb12u1+b6     x1   -         -          -
docker  20.10.24+dfsg1-1+deb12u1+b6+h1  x2   -         -          disabled
snapd   2.57.6-1+deb12u1+b2             x1   -         -          snapd
"""


def test_after_a_revert_the_active_revision_is_the_system_snap_not_the_newest():
    rows = snap.parse_list(REFOS_SNAP_REVERTED)
    assert updater(catalog.get("refos-snap"))._target(rows).slot == "docker@x1"
    assert [r.rev for r in rows if r.name == "docker" and r.disabled] == ["x2"]


def test_refos_snaps_system_snap_is_its_docker_snap():
    adapter = updater(catalog.get("refos-snap"))
    assert adapter._target(snap.parse_list(REFOS_SNAP_LIST)).slot == "docker@x1"


# --- snap changes -----------------------------------------------------------------

# cmd/snap/cmd_changes.go @ 2.57 prints "ID\tStatus\tSpawn\tReady\tSummary" through a
# tabwriter, the times human-formatted with spaces. Values are examples.
SNAP_CHANGES = """ID   Status  Spawn               Ready               Summary
7    Done    today at 10:02 UTC  today at 10:03 UTC  Refresh "core24" snap
8    Doing   today at 10:10 UTC  -                   Revert "core24" snap
9    Wait    today at 10:11 UTC  -                   Install "core24" snap from file "core24.snap"
"""


# refos-snap's `snap changes` after first boot, captured from its snapd: offline,
# "Initialize device" (registration with the store) never ends.
REFOS_SNAP_CHANGES = """ID   Status  Spawn               Ready               Summary
1    Done    today at 15:12 UTC  today at 15:12 UTC  Initialize system state
2    Done    today at 15:12 UTC  today at 15:14 UTC  Install "snapd" snap from file "/usr/lib/refos/snaps/snapd.snap"
3    Doing   today at 15:12 UTC  -                   Initialize device
4    Done    today at 15:14 UTC  today at 15:14 UTC  Install "core22" snap from file "/usr/lib/refos/snaps/core22.snap"
5    Done    today at 15:14 UTC  today at 15:14 UTC  Install "docker" snap from file "/usr/lib/refos/snaps/docker.snap"
6    Done    today at 15:14 UTC  today at 15:15 UTC  Connect docker:support to snapd:docker-support
13   Done    today at 15:15 UTC  today at 15:15 UTC  Running service command
"""  # noqa: E501 (captured lines)


def test_snap_changes_gives_each_change_its_status():
    assert snap.parse_changes(SNAP_CHANGES) == {"7": "Done", "8": "Doing", "9": "Wait"}
    assert snap.unfinished(snap.parse_changes(REFOS_SNAP_CHANGES)) == {"3": "Doing"}


# Every status overlord/state/change.go names (2.57, and Wait since 2.59), as
# Status.Ready() sorts them: Done, Undone, Hold and Error have finished.
@pytest.mark.parametrize(("status", "busy"), [
    ("Do", True), ("Doing", True), ("Abort", True), ("Undo", True), ("Undoing", True),
    ("Default", True), ("Done", False), ("Undone", False), ("Hold", False),
    ("Error", False), ("Wait", False)])
def test_a_change_is_unfinished_unless_ready_or_waiting_for_a_reboot(status, busy):
    assert bool(snap.unfinished({"1": status})) is busy


@pytest.mark.parametrize(("status", "ok"), [
    ("Done", True), ("Wait", True), ("Error", False), ("Undone", False), ("Hold", False),
    ("Doing", False)])
def test_only_done_or_waiting_for_its_reboot_counts_as_applied(status, ok):
    assert snap.settled(status) is ok


def test_no_wait_prints_the_change_id():
    assert snap.change_id("42\n") == "42"
    with pytest.raises(ValueError, match="change ID"):
        snap.change_id('error: cannot install "x.snap": snap "x" is not installed\n')


# --- repacking a revision ---------------------------------------------------------

def test_a_repacked_revision_gets_the_next_valid_version():
    assert snap.bumped("20.10.24") == "20.10.24+h1"
    assert snap.bumped("20.10.24+h1") == "20.10.24+h2"
    assert snap.bumped("20.10.24+h9") == "20.10.24+h10"
    with pytest.raises(ValueError, match="valid snap version"):
        snap.bumped("1" * 30)  # 33 characters after the bump: snapd's limit is 32


def test_snap_yaml_gets_the_new_version_and_keeps_the_rest():
    yaml = "name: docker\nversion: 20.10.24\nsummary: Docker\napps:\n  dockerd:\n" \
           "    version: not-this\n"
    out = snap.with_version(yaml, "20.10.24+h1")
    assert out.splitlines()[1] == "version: '20.10.24+h1'"
    assert "    version: not-this" in out and out.count("version:") == 2
    with pytest.raises(ValueError, match="no top-level version"):
        snap.with_version("name: docker\n", "1")


@pytest.mark.parametrize(("made_with", "packed_with"), [
    ("xz", "xz"), ("lzo", "lzo"), ("gzip", "xz")])  # snap pack takes only xz and lzo
def test_the_repack_keeps_the_installed_revisions_compression(made_with, packed_with,
                                                              tmp_path):
    """Read from what Debian's unsquashfs -s says of a squashfs made here."""
    if not shutil.which("mksquashfs"):
        pytest.skip("squashfs-tools is not installed (make deps installs it)")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("x")
    image = tmp_path / "s.snap"
    subprocess.run(["mksquashfs", tmp_path / "tree", image, "-comp", made_with, "-quiet",
                    "-noappend"], check=True, capture_output=True)
    superblock = subprocess.run(["unsquashfs", "-s", image], check=True, capture_output=True,
                                text=True).stdout
    assert snap.compression(superblock) == packed_with


class SnapGuest:
    """Answers the adapter's commands with outputs in snapd's shapes, to inject the
    faults a healthy refos-snap does not produce: a change that ends in Error, a
    guest without unsquashfs. Everything else is the real thing on refos-snap."""

    def __init__(self, final: str = "Done", unsquashfs: bool = True):
        self.final, self.unsquashfs, self.ran = final, unsquashfs, []

    def run(self, cmd, timeout=None, stdin=None):
        from harness.vm.ssh import Result

        self.ran.append(cmd)
        if cmd == "command -v unsquashfs" and not self.unsquashfs:
            return Result(1, "", "")
        if cmd.startswith("snap watch"):
            return Result(1 if self.final == "Error" else 0, "", "")
        ours = (f"ID Status Spawn Ready Summary\n12 {self.final} today today Install\n"
                f"13 {self.final} today today Revert\n")
        # Unfiltered, snapd's own unending "Initialize device" is there too, as on
        # refos-snap; `snap changes docker` lists only the docker snap's changes.
        out = {"snap list": REFOS_SNAP_LIST, "mktemp": "/var/tmp/harness-repack.abc\n",
               "cat /var": "name: docker\nversion: '20.10.24+dfsg1'\n",
               "unsquashfs -s": "Compression lzo\n", "snap install": "12\n",
               "snap revert": "13\n", "snap changes docker": ours,
               "snap changes": ours + "3 Doing today - Initialize device\n"}
        return Result(0, next((v for k, v in out.items() if cmd.startswith(k)), ""), "")

    def succeed(self, cmd, timeout=None, stdin=None):
        return self.run(cmd, timeout, stdin).stdout


def test_a_change_that_ends_in_error_is_a_refusal_that_fails_the_suite():
    from harness.updates import Refused, pytest_verdict

    with pytest.raises(Refused, match=r"change 12 .* is Error") as e:
        updater(catalog.get("refos-snap")).stage(SnapGuest("Error"))
    assert pytest_verdict(e.value)[0] == "fail"
    with pytest.raises(Refused, match="change 13"):
        updater(catalog.get("refos-snap")).rollback(SnapGuest("Error"))


def test_rollback_waits_on_the_reverted_snaps_changes_not_snapds_own():
    guest = SnapGuest()
    updater(catalog.get("refos-snap")).rollback(guest)
    assert "snap revert --no-wait docker" in guest.ran


def test_a_guest_without_unsquashfs_misses_a_precondition_and_says_which():
    from harness.updates import PreconditionMissing

    with pytest.raises(PreconditionMissing, match="squashfs-tools"):
        updater(catalog.get("refos-snap")).stage(SnapGuest(unsquashfs=False))


def test_staging_repacks_the_installed_revision_and_installs_it_dangerously():
    guest = SnapGuest()
    updater(catalog.get("refos-snap")).stage(guest)
    steps = [c.split()[0] + " " + c.split()[1] for c in guest.ran]
    assert "unsquashfs -q" in steps and "snap pack" in steps
    assert steps.index("unsquashfs -q") < steps.index("snap pack") < steps.index("snap install")
    assert any(c.startswith("snap pack --compression=lzo") for c in guest.ran)
    assert any(c.startswith("snap install --dangerous --no-wait") for c in guest.ran)
    assert guest.ran[-1].startswith("snap list")


# --- Snappy 15.04 -----------------------------------------------------------------

# snappy list -v of 15.04 (canonical/snapd @ f910d72c, ubuntu-snappy 1.0.1-0ubuntu1,
# cmd/snappy/cmd_list.go, showVerboseList): a tabwriter table "Name Date Version
# Developer", every installed version a row, the developer followed by `*` when
# active or `!` when a reboot makes it active. Dates and versions are examples.
SNAPPY_LIST = """Name          Date       Version   Developer
ubuntu-core   2015-04-23 2         ubuntu*
ubuntu-core   2015-05-05 3         ubuntu!
docker        2015-04-24 1.6.0.002 canonical*
webdm         2015-04-23 0.5       sideload*
"""
# What `snappy update` prints at the same commit (cmd/snappy/cmd_update.go): an
# "Installing NAME (VERSION)" line per update, the verbose list of the updates, then
# showRebootMessage's "Reboot to use the new ubuntu-core." (cmd_list.go).
SNAPPY_UPDATE = """Installing ubuntu-core (3)
Name          Date       Version   Developer
ubuntu-core   2015-05-05 3         ubuntu!
Reboot to use the new ubuntu-core.
"""


def test_snappy_list_reads_rows_and_their_marks():
    parts = snappy.parse_list(SNAPPY_LIST)
    assert [p.name for p in parts] == ["ubuntu-core", "ubuntu-core", "docker", "webdm"]
    assert parts[2] == snappy.Part("docker", "2015-04-24", "1.6.0.002", "canonical", True, False)


def test_snappy_update_output_has_one_part_not_its_reboot_message():
    parts = snappy.parse_list(SNAPPY_UPDATE)
    assert parts == [snappy.Part("ubuntu-core", "2015-05-05", "3", "ubuntu", False, True)]
    other = SNAPPY_UPDATE.replace("the new ubuntu-core.", "ubuntu-core version 2.")
    assert len(snappy.parse_list(other)) == 1


def test_snappy_os_version_now_and_after_the_next_boot():
    parts = snappy.parse_list(SNAPPY_LIST)
    assert snappy.os_version(parts) == "2"
    assert snappy.os_version(parts, next_boot=True) == "3"


def test_snappy_list_without_ubuntu_core_is_an_error():
    with pytest.raises(ValueError, match="ubuntu-core"):
        snappy.os_version(snappy.parse_list("Name Date Version Developer\n"))


class SnappyGuest:
    """Records the commands the Snappy adapter runs: no 15.04 guest boots here, and
    what is checked is the command line it would type."""

    def __init__(self):
        self.ran: list[str] = []

    def run(self, cmd, timeout=None):
        from harness.vm.ssh import Result

        self.ran.append(cmd)
        out = {"findmnt -no LABEL /": "system-a\n", "snappy list -v": SNAPPY_LIST}
        return Result(0, out.get(cmd, ""), "")

    def succeed(self, cmd, timeout=None):
        return self.run(cmd).stdout


def test_snappy_update_names_no_part_since_15_04_updates_everything():
    guest = SnappyGuest()
    staged = updater(catalog.get("snappy-1504")).stage(guest)
    assert "snappy update" in guest.ran
    assert not [c for c in guest.ran if c.startswith("snappy update ")]
    assert staged == SlotStatus("system-b", "3")


def test_ubuntu_core_rollback_suite_no_longer_needs_the_store():
    """Staging repacks the installed base offline, so nothing makes the suite skip."""
    from harness.updates import applicability

    assert applicability(catalog.get("ubuntu-core-24")) is None
