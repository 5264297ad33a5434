"""refos's boot-entry bookkeeping (images/refos/.../slots.sh), run by bash on
a scratch ESP directory: what refos-update and refos-rollback rely on."""

import subprocess
from pathlib import Path

from harness.paths import REPO

SLOTS = REPO / "images/refos/overlay/usr/lib/refos/slots.sh"


def sh(entries: Path, script: str) -> str:
    return subprocess.run(["bash", "-euo", "pipefail", "-c",
                           f". {SLOTS}; ENTRIES={entries}; {script}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_trial_entry_carries_a_try_counter_and_the_highest_generation(tmp_path):
    sh(tmp_path, 'write_entry a 1 1 ""')
    gen = sh(tmp_path, "next_generation")
    sh(tmp_path, f'write_entry b 2 {gen} "+2"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refos-a.conf", "refos-b+2.conf"]
    entry = (tmp_path / "refos-b+2.conf").read_text()
    assert "version 2\n" in entry and "root=PARTLABEL=ROOT-B" in entry
    assert "refos.version=2" in entry and "sort-key refos" in entry


def test_entry_file_finds_a_slot_whatever_its_counter_and_nothing_for_a_missing_one(tmp_path):
    sh(tmp_path, 'write_entry b 2 2 "+2"')
    (tmp_path / "refos-b+2.conf").rename(tmp_path / "refos-b+1-1.conf")
    assert sh(tmp_path, "entry_file b").endswith("refos-b+1-1.conf")
    assert sh(tmp_path, "entry_file a") == ""


def test_rewriting_a_slot_replaces_its_old_entry(tmp_path):
    sh(tmp_path, 'write_entry b 2 2 "+2"')
    sh(tmp_path, 'write_entry b 2 3 ""')
    assert [p.name for p in tmp_path.iterdir()] == ["refos-b.conf"]
    assert sh(tmp_path, "entry_version $(entry_file b)") == "2"
