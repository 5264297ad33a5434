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


# promises.update -> adapter class; adapters register themselves with @adapter(name).
ADAPTERS: dict[str, type] = {}
# Mechanisms the catalog may name that have no adapter (yet): their rollback skips
# with the distro's own note.
WITHOUT_ADAPTER = ("tdnf", "none")


def adapter(name: str):
    """Class decorator: the adapter for catalog `promises.update = name`."""
    def register(cls: type) -> type:
        ADAPTERS[name] = cls
        return cls
    return register


def mechanisms() -> tuple[str, ...]:
    """Every value the catalog's `promises.update` may take."""
    _load_adapters()
    return (*ADAPTERS, *WITHOUT_ADAPTER)


def _load_adapters() -> None:
    from harness.updates import refos, ros, rpm_ostree, snap, snappy, update_engine  # noqa: F401


def updater(distro: Distro) -> Updater:
    """The adapter for the distro's update mechanism; NoUpdater (with the distro's
    own words) where there is none."""
    _load_adapters()
    cls = ADAPTERS.get(distro.promises.update)
    if cls is None:
        why = distro.promises.notes.get("rollback") or \
            f"no update adapter for {distro.promises.update}"
        raise NoUpdater(f"{distro.name}: {why}")
    return cls(distro)


def applicability(distro: Distro) -> str | None:
    """Why the update suites cannot run on `distro` here (no adapter, or staging
    needs a server the restricted guest cannot reach), in its own terms; None if they can."""
    try:
        found = updater(distro)
    except NoUpdater as e:
        return str(e).removeprefix(f"{distro.name}: ")
    if isinstance(found, NetworkUpdater):
        return found.offline_reason().removeprefix(f"{distro.name}: ")
    return None
