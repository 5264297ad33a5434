"""Per-distro behaviour that data cannot say: how to update, roll back and tell
which slot booted. One small adapter per update mechanism, chosen by the
catalog's `promises.update`."""

from dataclasses import dataclass
from typing import Protocol

from harness.catalog import Distro


@dataclass(frozen=True)
class SlotStatus:
    """Which installation booted: a slot (A/B partition, ostree deployment) and its version."""

    slot: str
    version: str


class Updater(Protocol):
    def status(self, machine) -> SlotStatus: ...

    def stage(self, machine, kind: str = "update") -> SlotStatus:
        """Install an update (`update` or, for the fallback test, `broken`) for the next boot."""

    def rollback(self, machine) -> None: ...


class NoUpdater(Exception):
    pass


def updater(distro: Distro) -> Updater:
    from harness.distros import refos

    adapters = {"refos": refos.Refos}
    if distro.promises.update not in adapters:
        why = distro.promises.notes.get("rollback") or \
            f"no offline update adapter for {distro.promises.update}"
        raise NoUpdater(f"{distro.name}: {why}")
    return adapters[distro.promises.update]()
