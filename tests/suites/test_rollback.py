"""Atomic updates: update, roll back, and fall back by itself from a broken update.

Docker state lives outside the slots, so images and containers must survive."""

import pytest

from harness import dockerimage
from harness.distros import NoUpdater, updater

pytestmark = [pytest.mark.vm, pytest.mark.destructive]


@pytest.fixture
def adapter(distro):
    try:
        return updater(distro)
    except NoUpdater as e:
        pytest.skip(str(e))


def _start_container(m) -> None:
    m.succeed("docker load", stdin=dockerimage.build())
    m.succeed(f"docker run -d --name keeper --restart=always --network none {dockerimage.TAG} "
              "sleep 100000")


def _container_running(m) -> bool:
    return m.wait_until_succeeds("docker inspect -f '{{.State.Running}}' keeper").strip() == "true"


def test_update_then_rollback_switch_versions_and_keep_docker_state(machine_factory, adapter):
    m = machine_factory("rollback")
    before = adapter.status(m)
    _start_container(m)

    expected = adapter.stage(m, "update")
    m.reboot()
    after_update = adapter.status(m)
    assert after_update == expected and after_update.version != before.version
    assert _container_running(m)

    adapter.rollback(m)
    m.reboot()
    assert adapter.status(m) == before
    assert _container_running(m)
    assert dockerimage.TAG in m.succeed("docker images --format '{{.Repository}}:{{.Tag}}'")


def test_broken_update_falls_back_to_the_previous_slot_by_itself(machine_factory, adapter,
                                                                distro):
    if not distro.promises.auto_fallback:
        pytest.skip(f"{distro.name}: "
                    f"{distro.promises.notes.get('fallback', 'no automatic fallback promised')}")
    m = machine_factory("fallback")
    before = adapter.status(m)
    adapter.stage(m, "broken")
    m.reboot(settle=lambda: adapter.status(m) == before, boots=4)
    assert adapter.status(m) == before
