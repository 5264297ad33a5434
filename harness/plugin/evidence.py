"""What a test leaves behind to explain itself, and the checks run after each test.

Kola's lesson: a test can pass while the machine under it panicked, oopsed or
lost a unit. After every test the console and the guest's journal are checked
against harness.vm.console's table, and the guest for failed units; a test that
expects one opts out of that named check with `@pytest.mark.allow("segfault")`.
"""

import base64
import json
import re
import shlex
import urllib.parse
from pathlib import Path

from harness.paths import replace_file
from harness.vm import console

CHECKS = (*console.BY_NAME, "failed-units")


def console_problems(text: str, allowed: set[str]) -> list[str]:
    return [str(f) for f in console.scan(text, allowed)]


def guest_problems(machine, since_us: int, allowed: set[str]) -> list[str]:
    """Failed units now, and kernel badness in this boot's journal since `since_us`
    (guest monotonic microseconds)."""
    problems = []
    if "failed-units" not in allowed:
        failed = machine.run("systemctl --failed --no-legend --plain").stdout.split("\n")
        problems += [f"failed-units: {line.strip()}" for line in failed if line.strip()]
    kernel = machine.run("journalctl -k -b --no-pager -o short-monotonic").stdout
    recent = [line for line in kernel.splitlines() if _after(line, since_us)]
    problems += console_problems("\n".join(recent), allowed | {"failed-units"})
    return problems


def _after(line: str, since_us: int) -> bool:
    m = re.match(r"\[\s*(\d+)\.(\d+)\]", line)
    return bool(m) and int(m.group(1)) * 10**6 + int(m.group(2)) >= since_us


def guest_clock_us(machine) -> int:
    """The guest's monotonic clock, the journal's own time base."""
    uptime = machine.run("cat /proc/uptime").stdout.split()
    return int(float(uptime[0]) * 10**6) if uptime else 0


def keep(machine, dest: Path) -> Path:
    """What every machine leaves: console log, domain XML, its timings, and those of
    the cold boot behind it (boot.json: a restored machine's template's), with the
    guest's resets (each a new QEMU process) and the times the watchdog
    power-cycled a reset the firmware never answered (a guard expected never to
    fire: its count is the run's record that it did not)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("console.log", "domain.xml"):
        if (machine.dir / name).exists():
            replace_file(dest / name, (machine.dir / name).read_bytes())
    replace_file(dest / "timings.json", json.dumps(machine.timings, indent=2) + "\n")
    template = machine.template or machine
    boot = {"machine": template.name, "timings": machine.boot_timings,
            "restarts": machine.restarts, "power_cycles": machine.power_cycles}
    replace_file(dest / "boot.json", json.dumps(boot, indent=2) + "\n")
    return dest


def save(machine, dest: Path, journal: bool) -> Path:
    """What a failed test's machine leaves besides (keep): the seed contents (private
    keys redacted) and, when asked, the guest journal."""
    keep(machine, dest)
    seed_dir = dest / "seed"
    secret = machine.host_key.private_pem if machine.host_key else ""
    for name, data in getattr(machine.seed, "files", {}).items():
        (seed_dir / name).parent.mkdir(parents=True, exist_ok=True)
        replace_file(seed_dir / name, redact(data, secret))
    if journal and machine.res.domain is not None:
        try:
            text = machine.run("journalctl -b --no-pager -o short-monotonic").stdout
        except Exception as e:  # the guest may be the reason the test failed
            text = f"journal not fetched: {e}\n"
        replace_file(dest / "journal.txt", text)
    return dest


def redact(data: bytes, secret: str) -> bytes:
    """Remove a private key from seed contents, in each encoding a format may
    use for it (plain, JSON string, percent-encoded data URL, base64)."""
    if not secret:
        return data
    forms = {secret, json.dumps(secret)[1:-1], urllib.parse.quote(secret),
             urllib.parse.quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
    for form in sorted(forms, key=len, reverse=True):
        data = data.replace(form.encode(), b"<private host key redacted>")
    return data


def node_dir(nodeid: str) -> str:
    """A folder name for a pytest node id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")


def ssh_hint(machine) -> str:
    return f"{machine.name} kept running; get in with:\n  {machine.ssh_command()}\n" \
           f"remove it with: virsh destroy {shlex.quote(machine.res.domain.name())}" \
           " && harness clean"
