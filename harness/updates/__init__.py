"""Per-distro behaviour that data cannot say: how to update, roll back and tell
which slot booted. One small adapter per update mechanism, chosen by the
catalog's `promises.update` (harness.registry names them).

When an update cannot be staged, the adapter says why with one of three
outcomes, never a guess: the tool refused (`Refused`), the guest lacks what the
mechanism needs (`PreconditionMissing`), or the vendor's server could not be
reached (`NeedsNetwork`). Only the last one is about the network."""

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from harness import registry
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

    def abandoned(self, machine, staged: SlotStatus) -> bool:
        """Whether the boot loader tried `staged` and fell back from it by itself."""


class NoUpdater(Exception):
    """The catalog names no adapter for the distro's update mechanism."""


class NotStaged(Exception):
    """Nothing was staged; the subclass says why."""

    verdict = "not staged"


class Refused(NotStaged):
    """The update tool ran and declined, in its own words: a broken promise."""

    verdict = "refused"


class PreconditionMissing(NotStaged):
    """The guest lacks something the mechanism needs (a file, a feature); the
    message names it and how to provide it."""

    verdict = "missing precondition"


class NeedsNetwork(NotStaged):
    """The mechanism fetches updates from its vendor's server, which a guest with
    `restrict=on` networking cannot reach."""

    verdict = "needs network"


def pytest_verdict(error: NotStaged) -> tuple[str, str]:
    """("skip" or "fail", message) for a suite: a missing precondition or network is
    a reason not to run; a refusal is the promise failing."""
    action = "fail" if isinstance(error, Refused) else "skip"
    return action, f"{error.verdict}: {error}"


# What a failed download says when the host cannot be reached, by the library that
# wrote it: Go's net package (ros, snapd, locksmith) wraps lookups in "dial tcp ..."
# and returns errNoSuchHost, "no such host" (golang/go src/net/dnsclient_unix.go), and
# timeouts read "i/o timeout"; libcurl's error buffer (tdnf, librepo) says "Could not
# resolve host: NAME"; ostree's curl fetcher reports curl_easy_strerror() instead,
# "While fetching URL: [6] Couldn't resolve host name" (ostreedev/ostree
# src/libostree/ostree-fetcher-curl.c @ v2022.7), and the codes it meets offline read
# "Couldn't resolve host name" (6), "Couldn't connect to server" (7), "Timeout was
# reached" (28) (curl/curl lib/strerror.c, curl_easy_strerror, curl-7_88_1); glibc's
# strerror and gai_strerror say "Network is unreachable" (ENETUNREACH), "Name or service
# not known" (EAI_NONAME, as Python's getaddrinfo shows it) and "Temporary failure in
# name resolution" (EAI_AGAIN). Exact files for the glibc strings were not checked.
NETWORK_ERRORS = re.compile(
    r"no such host|i/o timeout|dial tcp|could not resolve host|couldn't resolve host|"
    r"couldn't connect to server|timeout was reached|network is unreachable|"
    r"name or service not known|temporary failure in name resolution", re.IGNORECASE)


def classify_failure(output: str, what: str) -> NotStaged:
    """The outcome of a failed update command from its output: NeedsNetwork only
    when the output says a host could not be reached; otherwise a refusal."""
    if NETWORK_ERRORS.search(output):
        return NeedsNetwork(f"{what}: the update server could not be reached\n{output}")
    return Refused(f"{what}\n{output}")


def run_update(machine, cmd: str, what: str, timeout: float | None = None,
               classify: Callable[[str, str], NotStaged] = classify_failure,
               precondition: Callable[[str], str] = lambda output: "",
               failed: Callable[[str], bool] = lambda output: False) -> str:
    """Run an update command in the guest and return its stdout; when it fails, raise
    the outcome its output shows: PreconditionMissing where `precondition` names what
    the guest lacks, else what `classify` makes of it (`classify_failure` by default).
    A zero exit whose output `failed` calls a failure is one too: some tools exit 0
    whatever their helper did. `what` starts every message (the distro, then the step)."""
    result = machine.run(cmd, timeout)
    output = result.describe(cmd)
    if result.status == 0:
        if not failed(output):
            return result.stdout
        what = f"{what} (exit 0, but its output reports a failure)"
    if missing := precondition(output):
        raise PreconditionMissing(f"{what}: {missing}\n{output}")
    raise classify(output, what)


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

    def _staged(self, machine, cmd: str, timeout: float | None = None) -> str:
        """Run the documented update command (see `run_update`)."""
        return run_update(machine, cmd, f"{self.distro.name}: {self.mechanism}", timeout,
                          precondition=self._precondition, failed=self._failed)

    def _precondition(self, output: str) -> str:
        """What the guest lacks, when the tool's output says so; "" otherwise."""
        return ""

    def _failed(self, output: str) -> bool:
        """Whether a zero exit's output still reports a failure; never, by default."""
        return False


def adapter_class(mechanism: str) -> type | None:
    """The adapter class harness.registry names for `mechanism`; None when it names none."""
    ref = registry.UPDATE_ADAPTERS.get(mechanism)
    if ref is None:
        return None
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def updater(distro: Distro) -> Updater:
    """The adapter for the distro's update mechanism; NoUpdater (with the distro's
    own words) where there is none."""
    cls = adapter_class(distro.promises.update)
    if cls is None:
        why = distro.promises.notes.get("rollback") or \
            f"no update adapter for {distro.promises.update}"
        raise NoUpdater(f"{distro.name}: {why}")
    return cls(distro)


def applicability(distro: Distro, open_network: bool = False) -> str | None:
    """Why the update suites cannot run on `distro` here (no adapter, or staging
    needs a server the restricted guest cannot reach, unless guests reach the network:
    --open-network), in its own terms; None if they can."""
    try:
        found = updater(distro)
    except NoUpdater as e:
        return str(e).removeprefix(f"{distro.name}: ")
    if isinstance(found, NetworkUpdater) and not open_network:
        return found.offline_reason().removeprefix(f"{distro.name}: ")
    return None
