"""What the serial console (and the kernel journal) can say that matters, as one table.

Each pattern has a name (what `@pytest.mark.allow(name)` lets through), a regex,
and whether it is fatal during boot: a fatal line ends any wait at once, since
waiting longer cannot help. After every test the same table is checked again
over what the test added (kola's console checks are the model).
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    fatal: bool  # ends a boot or a wait at once
    allowable: bool = True  # a test may allow it with @pytest.mark.allow(name)


PATTERNS = (
    # Ignition's own verdict (coreos/ignition v2.14.0 internal/main.go logs "Ignition
    # failed: ..." at CRITICAL; refos-ignition's initramfs forwards its journal to the
    # console). Before emergency-shell, so a failed boot quotes Ignition's error.
    Pattern("ignition-failed", re.compile(r"ignition\[\d+\]: .*Ignition failed: .*"), fatal=True),
    Pattern("kernel-panic", re.compile(r"Kernel panic - not syncing.*"), fatal=True),
    # The last is dracut's (modules.d/98dracut-systemd/dracut-emergency.sh, dracut 059).
    Pattern("emergency-shell", re.compile(
        r"You are in emergency mode.*|Dropping to a shell!.*"
        r"|Give root password for maintenance.*|\(initramfs\) "
        r"|Entering emergency mode\. Exit the shell to continue\."), fatal=True),
    Pattern("oops", re.compile(r"(?:BUG: |Oops: |general protection fault).*"), fatal=False),
    # The kernel's __warn() prints "WARNING: CPU: %d PID: %d at %pS" (torvalds/linux
    # kernel/panic.c @ v6.1); kola's console checks flag the same line.
    Pattern("kernel-warning", re.compile(r"WARNING: CPU: \d+ PID: \d+ at .*"), fatal=False),
    Pattern("segfault", re.compile(r"\S+\[\d+\]: segfault at .*"), fatal=False),
    Pattern("oom-kill", re.compile(r"Out of memory: Killed process.*"), fatal=False),
)
BY_NAME = {p.name: p for p in PATTERNS}

# The kernel's last lines before it resets the machine, under pr_fmt "reboot: ":
# kernel_restart() prints "Restarting system" at KERN_EMERG, which every console
# shows (torvalds/linux kernel/reboot.c @ v6.1; "Restarting system with command
# '...'" when given one), then x86's native_machine_restart() prints "machine
# restart" at KERN_NOTICE, which `quiet` hides (arch/x86/kernel/reboot.c @ v6.1).
# Anything after them comes from the firmware. A power-off prints "Power down".
RESET_LINE = "reboot: machine restart"
_RESET = re.compile(r"reboot: (?:machine restart|Restarting system)[^\n]*\s*\Z")


def ends_with_reset(text: str) -> bool:
    """Whether the last thing on a console is the kernel resetting the machine."""
    return bool(_RESET.search(text[-512:]))


@dataclass(frozen=True)
class Finding:
    pattern: Pattern
    line: str

    def __str__(self) -> str:
        return f"{self.pattern.name}: {self.line}"


def scan(text: str, allowed: frozenset[str] | set[str] = frozenset(),
         fatal_only: bool = False) -> list[Finding]:
    """The first line each pattern matches in `text`, skipping allowed names."""
    found = []
    for p in PATTERNS:
        if (fatal_only and not p.fatal) or (p.allowable and p.name in allowed):
            continue
        if m := p.regex.search(text):
            found.append(Finding(p, m.group(0).strip()))
    return found


def tail(text: str, lines: int = 25) -> str:
    """The last lines of a console, indented for an error message."""
    return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:])
