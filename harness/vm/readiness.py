"""When a machine is ready, as one table of phases (Lima's requirements are the model).

Each phase names what it waits for, how it probes, which timeout bounds it
(harness.vm.timeouts) and what to look at when it is not reached. The machine
waits for them in order and records the seconds at which each was reached under
the phase's name; the report draws its boot chart from the same names.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Guest(Protocol):
    """What the phases probe: harness.vm.machine.Machine is one."""

    def console_match(self, pattern: str) -> str | None: ...

    def ssh_banner(self) -> str | None: ...

    def answers(self) -> bool: ...

    def boot_finished(self) -> bool: ...


@dataclass(frozen=True)
class Phase:
    name: str  # the timings key: seconds from domain start until it was reached
    description: str
    label: str  # the report's name for the stretch of boot that ends here
    probe: Callable[[Guest], object]  # true once reached; SSH errors mean "not yet"
    timeout: str  # a harness.vm.timeouts name
    hint: str  # for the user, when the phase is not reached in time


PHASES = (
    Phase("kernel", "kernel on the console", "firmware to kernel",
          lambda m: m.console_match(r"Linux version \S+"), "boot",
          "nothing from the kernel: check the catalog's firmware and the boot loader in "
          "the console log"),
    Phase("ssh", "SSH banner", "to SSH", lambda m: m.ssh_banner(), "boot",
          "sshd does not listen: did the guest read its seed? look for cloud-init or "
          "Ignition in the console log"),
    Phase("command", "first command", "to first command", lambda m: m.answers(), "boot",
          "sshd answers but refuses the harness: the seed's user or key was not applied"),
    Phase("ready", "boot finished", "to boot finished", lambda m: m.boot_finished(), "ready",
          "the catalog's boot.ready commands did not succeed: see the failed units"),
)

