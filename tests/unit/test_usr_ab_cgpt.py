"""The offline A/B switch of CoreOS and Flatcar, proven on a real GPT: the adapter's
cgpt command lines run with Debian's cgpt against a disk file laid out like theirs,
and `cgpt show` reads back the priority, tries and successful bits GRUB's
gptprio.next will see."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import catalog
from harness.updates import PreconditionMissing, updater
from harness.updates import update_engine as ue

pytestmark = pytest.mark.skipif(not (shutil.which("cgpt") and shutil.which("sfdisk")),
                                reason="needs cgpt (Debian package cgpt) and sfdisk (fdisk)")

# Partitions 1-4 of the USR layout (coreos/scripts build_library/disk_layout.json @ a6824e7b,
# flatcar/scripts @ ab6d76d9): labels, GUIDs and the USR type GUID as they write them;
# sizes are shrunk, the GPT is what matters.
LAYOUT = f"""label: gpt
start=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI-SYSTEM"
size=2048, type=21686148-6449-6E6F-744E-656564454649, name="BIOS-BOOT"
size=8192, type={ue.USR_TYPE}, uuid={ue.PARTUUID["USR-A"]}, name="USR-A"
size=8192, type={ue.USR_TYPE}, uuid={ue.PARTUUID["USR-B"]}, name="USR-B"
"""


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def disk(tmp_path: Path) -> str:
    """A fresh image's GPT: disk_util gives the `prioritize` partition, USR-A,
    `cgpt add -i 3 -S1 -P1` (build_library/disk_util @ a6824e7b); USR-B stays 0."""
    path = tmp_path / "usr-ab.img"
    path.write_bytes(b"")
    subprocess.run(["truncate", "-s", "32M", str(path)], check=True)
    subprocess.run(["sfdisk", "-q", str(path)], input=LAYOUT, text=True, check=True)
    sh(f"cgpt add -i 3 -S 1 -P 1 {shlex.quote(str(path))}")
    return str(path)


def table(disk: str) -> dict[str, ue.Attributes]:
    def field(num: int, flag: str) -> int:
        return int(sh(f"cgpt show -i {num} -{flag} {shlex.quote(disk)}"))
    return {slot: ue.Attributes(field(n, "P"), field(n, "T"), field(n, "S"))
            for slot, n in ue.PARTITION.items()}


def grub_boots(disk: str) -> str:
    """What gptprio.next does at boot: choose, then take one try from an untried slot."""
    slot = ue.next_boot(table(disk))
    attrs = table(disk)[slot]
    if not attrs.successful and attrs.tries:
        sh(f"cgpt add -i {ue.PARTITION[slot]} -T {attrs.tries - 1} {shlex.quote(disk)}")
    return slot


def run(commands: list[str]) -> None:
    for cmd in commands:
        sh(cmd)


def test_the_labels_and_type_are_flatcars_as_cgpt_finds_them(disk):
    assert sh(f"cgpt find -l USR-B {disk}").strip() == f"{disk}4"
    assert sh(f"cgpt find -t {ue.USR_TYPE} {disk}").split() == [f"{disk}3", f"{disk}4"]
    assert grub_boots(disk) == "USR-A"


def test_staging_boots_the_other_slot_once_then_falls_back_when_it_fails(disk):
    run(ue.try_once_commands(disk, "USR-B"))
    assert table(disk) == {"USR-A": ue.Attributes(1, 0, 1), "USR-B": ue.Attributes(2, 1, 0)}
    assert grub_boots(disk) == "USR-B"
    # That boot failed (verity refused the copy) and nothing marked it good: next is A.
    assert grub_boots(disk) == "USR-A"
    assert grub_boots(disk) == "USR-A"


def test_rollback_prefers_the_slot_that_booted_before(disk):
    run(ue.try_once_commands(disk, "USR-B"))
    assert grub_boots(disk) == "USR-B"
    run(ue.prefer_commands(disk, "USR-A"))
    assert table(disk)["USR-A"] == ue.Attributes(2, 0, 1)
    assert grub_boots(disk) == "USR-A"


def test_a_disk_path_is_quoted_in_the_command_lines(tmp_path):
    odd = tmp_path / "a disk; true"
    assert all(shlex.quote(str(odd)) in c for c in ue.try_once_commands(str(odd), "USR-A"))


def test_the_copy_follows_kola_for_flatcar_and_needs_no_kernel_copy_for_coreos_647():
    flatcar = ue.copy_commands("USR-A", ue.LAYOUTS["flatcar"], broken=True)
    assert flatcar == [
        "dd if=/dev/disk/by-partlabel/USR-A of=/dev/disk/by-partlabel/USR-B bs=10M status=none",
        "cp /boot/flatcar/vmlinuz-a /boot/flatcar/vmlinuz-b",
        "printf '%064d' 0 | dd of=/boot/flatcar/vmlinuz-b bs=1 seek=64 count=64 conv=notrunc "
        "status=none"]
    assert ue.copy_commands("USR-B", ue.LAYOUTS["coreos-647"]) == [
        "dd if=/dev/disk/by-partlabel/USR-B of=/dev/disk/by-partlabel/USR-A bs=10M status=none"]


def test_the_broken_kernel_copy_loses_its_verity_hash_and_nothing_else(tmp_path):
    """The corruption command, run on a file standing in for vmlinuz-b."""
    kernel = tmp_path / "vmlinuz-b"
    original = bytes(range(256)) * 4
    kernel.write_bytes(original)
    cmd = ue.copy_commands("USR-A", ue.LAYOUTS["flatcar"], broken=True)[-1]
    subprocess.run(cmd.replace("/boot/flatcar/vmlinuz-b", str(kernel)), shell=True, check=True)
    spoiled = kernel.read_bytes()
    assert spoiled[64:128] == b"0" * 64
    assert spoiled[:64] == original[:64] and spoiled[128:] == original[128:]


class NoVerity:
    """A machine on which the adapter must stop before touching anything."""

    def run(self, cmd, timeout=None):
        raise AssertionError(f"no guest command expected, got {cmd!r}")


def test_coreos_647_cannot_stage_a_broken_update_offline_and_says_why():
    adapter = updater(catalog.get("coreos-647"))
    with pytest.raises(PreconditionMissing, match="not under dm-verity"):
        adapter.stage(NoVerity(), "broken")
