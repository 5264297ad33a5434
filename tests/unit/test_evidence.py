"""Evidence never carries the guest's private host key, in any seed encoding."""

from pathlib import Path

import pytest

from harness import seed
from harness.plugin import evidence
from harness.seed import keys
from harness.vm import console


@pytest.mark.parametrize("seed_format", ["nocloud", "config-2", "ignition"])
def test_saved_seed_contents_have_the_private_host_key_redacted(tmp_path: Path, seed_format):
    client = keys.generate(tmp_path / "k", "id", "c")
    host = keys.generate(tmp_path / "k", "host", "h")
    intent = seed.Intent(hostname="guest", user="core", authorized_keys=(client.public,),
                         host_key=host)
    media = seed.build(seed_format, intent, tmp_path)
    secret_line = host.private_pem.splitlines()[1]
    # The key is in the media (redaction finds something to remove) ...
    assert any(evidence.redact(d, host.private_pem) != d for d in media.files.values())
    # ... and in no file once redacted.
    for data in media.files.values():
        cleaned = evidence.redact(data, host.private_pem)
        assert secret_line.encode() not in cleaned
        assert b"PRIVATE KEY-----" not in cleaned.replace(b"%20", b" ")


def test_console_badness_is_named_and_allowed_checks_are_skipped():
    text = "ok\n[ 3.1] foo[123]: segfault at 0 ip 0 sp 0 error 4\nOut of memory: Killed process 9"
    found = evidence.console_problems(text, allowed=set())
    assert [p.split(":")[0] for p in found] == ["segfault", "oom-kill"]
    assert evidence.console_problems(text, allowed={"segfault", "oom-kill"}) == []


def test_a_kernel_warning_on_the_console_is_named_and_not_fatal():
    line = "[ 12.3] WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:4421 __alloc_pages+0x2f0/0x320"
    assert evidence.console_problems(f"boot\n{line}\n", allowed=set()) == [
        "kernel-warning: " + line.split("] ", 1)[1]]
    assert evidence.console_problems(line, allowed={"kernel-warning"}) == []
    assert console.scan(line, fatal_only=True) == []


def test_every_machine_records_its_resets_and_power_cycles_beside_its_boot(tmp_path: Path):
    """The watchdog's power cycle is a guard expected never to fire; each machine's
    boot.json says how often it did (a stand-in machine: only what keep() reads)."""
    import json
    from types import SimpleNamespace

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    machine = SimpleNamespace(name="m", dir=run_dir, timings={}, boot_timings={"ready": 1.0},
                              template=None, restarts=3, power_cycles=2)
    dest = evidence.keep(machine, tmp_path / "evidence")
    boot = json.loads((dest / "boot.json").read_text())
    assert (boot["restarts"], boot["power_cycles"]) == (3, 2)
