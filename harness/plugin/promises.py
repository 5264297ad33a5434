"""What a distro promises, as pytest markers decided at collection, before any boot.

`@pytest.mark.promise("readonly")` on a test means: it checks that promise, so
on a distro that does not make it the test is skipped, in the catalog's own
words (`promises.notes`), before a machine fixture boots anything.
"""

from collections.abc import Callable

import pytest

from harness.catalog import Distro
from harness.cluster_configs import ETCD_BY_SEED
from harness.updates import applicability


def _readonly(d: Distro, open_network: bool) -> str | None:
    return None if d.promises.readonly else \
        d.promises.notes.get("readonly", "no read-only path promised")


def _writable(d: Distro, open_network: bool) -> str | None:
    if not d.promises.writable:
        return "no writable path promised"
    return d.promises.notes.get("writable")  # writable, but not kept across a reboot


def _docker_shipped(d: Distro, open_network: bool) -> str | None:
    if d.promises.docker in ("framework", "snap"):
        return d.promises.notes.get("docker", f"Docker comes as a {d.promises.docker}")
    return None


def _docker_at_boot(d: Distro, open_network: bool) -> str | None:
    if d.promises.docker in ("enabled", "socket"):
        return None
    return d.promises.notes.get("docker") or \
        f"Docker is not a systemd unit started at boot ({d.promises.docker})"


def _update(d: Distro, open_network: bool) -> str | None:
    return applicability(d, open_network)


def _auto_fallback(d: Distro, open_network: bool) -> str | None:
    if d.promises.auto_fallback:
        return _update(d, open_network)
    notes = d.promises.notes
    return notes.get("fallback") or notes.get("rollback") or "no automatic fallback promised"


def _etcd(d: Distro, open_network: bool) -> str | None:
    if not d.promises.etcd_unit:
        return d.promises.notes.get("etcd", "no etcd cluster member promised")
    if d.boot.seed not in ETCD_BY_SEED:
        return f"no etcd member configuration is written for seed format {d.boot.seed!r}"
    return None


def _fleet(d: Distro, open_network: bool) -> str | None:
    """No catalog entry promises fleet: where a distro had it (CoreOS before 2018),
    no fleet configuration is written yet, and the test says so."""
    return d.promises.notes.get("fleet", "no fleet configuration is written for this distro")


# promise name -> why the distro does not make it (None: it does), given whether
# guests reach the network (--open-network)
PROMISES: dict[str, Callable[[Distro, bool], str | None]] = {
    "readonly": _readonly,
    "writable": _writable,
    "docker_shipped": _docker_shipped,
    "docker_at_boot": _docker_at_boot,
    "update": _update,
    "auto_fallback": _auto_fallback,
    "etcd": _etcd,
    "fleet": _fleet,
}


def unmet(names: list[str], distro: Distro, open_network: bool = False) -> str | None:
    """Why `distro` does not make one of the promises `names`, or None."""
    for name in names:
        if name not in PROMISES:
            raise pytest.UsageError(f"unknown promise {name!r}; known: {', '.join(PROMISES)}")
        if why := PROMISES[name](distro, open_network):
            return f"{distro.name}: {why}"
    return None
