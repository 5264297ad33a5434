"""The disk steps refos and its variants share (harness.images.steps), run with the
real tools on a small disk and read back with other real tools: sfdisk for the
table, mtools for the ESP, debugfs for an ext4 made in place."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.images import steps

TOOLS = ("sfdisk", "mkfs.vfat", "mmd", "mcopy", "mtype", "mke2fs", "debugfs")
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                reason="the disk tools are missing: run `make deps`")
MIB = steps.MIB


def _out(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_a_gpt_disk_holds_an_esp_with_its_files_and_an_ext4_made_in_place(tmp_path: Path):
    loader = tmp_path / "BOOTX64.EFI"
    loader.write_bytes(b"not really a loader\n")
    esp = tmp_path / "esp.img"
    steps.esp_image(esp, 33, {"EFI/BOOT/BOOTX64.EFI": loader}, dirs=("refos/b",))
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("refos\n")
    raw = tmp_path / "disk.raw"

    offsets = steps.gpt_disk(raw, [steps.Partition("ESP", steps.ESP_TYPE, 33, esp),
                                   steps.Partition("root", steps.LINUX_TYPE, 8),
                                   steps.Partition("spare", steps.LINUX_TYPE, 2)])
    steps.ext4_at(raw, offsets[1], 8, "root", tree)

    assert offsets == [1, 34, 42]
    assert raw.stat().st_size == (1 + 33 + 8 + 2 + 1) * MIB
    table = json.loads(_out("sfdisk", "--json", str(raw)))["partitiontable"]
    assert [(p["name"], p["start"], p["size"]) for p in table["partitions"]] == \
        [("ESP", 2048, 33 * 2048), ("root", 34 * 2048, 8 * 2048), ("spare", 42 * 2048, 2048 * 2)]
    assert table["partitions"][0]["type"] == steps.ESP_TYPE
    # The ESP as copied into the disk, read at its offset (mtools' @@offset).
    at_esp = f"{raw}@@{MIB}"
    assert _out("mtype", "-i", at_esp, "::/EFI/BOOT/BOOTX64.EFI") == "not really a loader\n"
    assert "b" in _out("mdir", "-b", "-i", at_esp, "::/refos")
    root = tmp_path / "root.ext4"
    subprocess.run(["dd", f"if={raw}", f"of={root}", "bs=1M", "skip=34", "count=8",
                    "status=none"], check=True)
    assert _out("debugfs", "-R", "cat /etc/hostname", str(root)) == "refos\n"


def test_a_missing_tool_is_a_build_error_that_says_how_to_get_it():
    with pytest.raises(steps.BuildError, match="no-such-tool-here is missing: run `make deps`"):
        steps.run("no-such-tool-here")
