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


class NeedsNetwork(NoUpdater):
    """The mechanism fetches updates from its vendor's server, which a guest with
    `restrict=on` networking cannot reach; nothing can be staged offline."""


class NetworkUpdater:
    """Base of the adapters whose `stage` downloads from the vendor: the guest
    never reaches a network, so the rollback suite skips them with `offline_reason`."""

    mechanism = "the updater"
    server = "its vendor's update server"

    def __init__(self, distro: Distro):
        self.distro = distro

    def offline_reason(self) -> str:
        why = self.distro.promises.notes.get("update") or \
            f"{self.mechanism} fetches updates from {self.server}"
        return f"{self.distro.name}: {why}; the guest has no network (restrict=on)"

    def _staged(self, machine, cmd: str, timeout: float | None = None) -> None:
        """Run the documented update command; its failure offline means no server."""
        result = machine.run(cmd, timeout)
        if result.status != 0:
            raise NeedsNetwork(f"{self.offline_reason()}: {result.describe(cmd)}")


def updater(distro: Distro) -> Updater:
    from harness.updates import refos, ros, rpm_ostree, snap, snappy, update_engine

    offline = {"refos": refos.Refos}
    networked = {"update-engine": update_engine.UpdateEngine,
                 "rpm-ostree": rpm_ostree.RpmOstree, "snappy": snappy.Snappy,
                 "snap": snap.Snap, "ros": ros.Ros}
    kind = distro.promises.update
    if kind in offline:
        return offline[kind]()
    if kind in networked:
        return networked[kind](distro)
    why = distro.promises.notes.get("rollback") or f"no update adapter for {kind}"
    raise NoUpdater(f"{distro.name}: {why}")
