"""The promises, checked in testinfra's vocabulary through the `host` fixture."""

import pytest

pytestmark = pytest.mark.vm


@pytest.mark.promise("docker_at_boot")
def test_docker_unit_is_enabled_and_running(distro, host):
    unit = host.service(distro.promises.docker_unit)
    assert unit.is_enabled and unit.is_running


def test_root_mount_is_as_promised(distro, host):
    promise = distro.promises
    if "/" in promise.readonly:
        expected = "ro"
    elif "/" in promise.writable:
        expected = "rw"
    else:
        pytest.skip(f"{distro.name}: promises nothing about / itself "
                    f"(read-only: {', '.join(promise.readonly) or 'none'})")
    root = host.mount_point("/")
    assert root.exists and expected in root.options, root.options
