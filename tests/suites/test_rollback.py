"""Atomic updates: update, roll back, and fall back by itself from a broken update.

Slots are compared, not versions: an offline update may copy the booted slot onto
the other (CoreOS, Flatcar), and a switch of slot with the same version is still
the update mechanism at work. Docker state lives outside the slots, so images and
containers must survive."""

from contextlib import contextmanager

import pytest

from harness.images import dockerimage
from harness.updates import NotStaged, pytest_verdict, updater
from tests.bugs.known import MOBY_44900

pytestmark = [pytest.mark.vm, pytest.mark.destructive, pytest.mark.promise("update")]


@pytest.fixture(scope="session")
def adapter(distro):
    """The distro's update adapter (the `update` promise already said it has one)."""
    return updater(distro)


@contextmanager
def staging():
    """Nothing staged becomes a skip (missing precondition, no network) or a
    failure (the tool refused), in the adapter's words."""
    try:
        yield
    except NotStaged as e:
        action, message = pytest_verdict(e)
        (pytest.skip if action == "skip" else pytest.fail)(message)


def _start_container(m) -> None:
    m.succeed("docker load", stdin=dockerimage.build())
    m.succeed(f"docker run -d --name keeper --restart=always --network none {dockerimage.TAG} "
              "sleep 100000")


def _container_running(m) -> None:
    """The container that was started before runs again (restarted by Docker at boot)."""
    m.wait_until_succeeds("test \"$(docker inspect -f '{{.State.Running}}' keeper)\" = true")


def _marker_booted(adapter, m, version: str) -> None:
    """Where the update carries a marker file in its tree (ostree's offline commit), the
    booted tree shows it: the new content booted, not only a new name."""
    if hasattr(adapter, "marker"):
        assert adapter.marker(m) == version


@MOBY_44900  # refos-noapparmor's Docker starts no container
def test_update_then_rollback_switch_slots_and_keep_docker_state(adapter, machine_factory):
    m = machine_factory("rollback")
    before = adapter.status(m)
    _start_container(m)

    with staging():
        expected = adapter.stage(m, "update")
    m.reboot()
    after_update = adapter.status(m)
    assert after_update == expected and after_update.slot != before.slot
    _marker_booted(adapter, m, expected.version)
    _container_running(m)

    adapter.rollback(m)
    m.reboot()
    assert adapter.status(m) == before
    _marker_booted(adapter, m, "")
    _container_running(m)
    assert dockerimage.TAG in m.succeed("docker images --format '{{.Repository}}:{{.Tag}}'")


@pytest.mark.promise("auto_fallback")
def test_broken_update_falls_back_to_the_previous_slot_by_itself(adapter, machine_factory):
    m = machine_factory("fallback")
    before = adapter.status(m)
    with staging():
        staged = adapter.stage(m, "broken")
    assert staged.slot != before.slot
    m.reboot(settle=lambda: adapter.status(m) == before, boots=4)
    assert adapter.status(m) == before
    # The broken slot was really tried (its tries used up), not skipped.
    assert adapter.abandoned(m, staged), f"slot {staged.slot} was never tried"
