"""Docker: the daemon comes up by itself and runs containers, with no registry."""

import pytest

from harness import dockerimage

pytestmark = pytest.mark.vm


def test_docker_is_active_after_boot_without_anyone_starting_it(machine, distro):
    promise = distro.promises
    if promise.docker not in ("enabled", "socket"):
        pytest.skip(f"{distro.name}: Docker is not started by systemd at boot ({promise.docker})")
    unit = promise.docker_unit
    assert machine.succeed(f"systemctl is-active {unit}").strip() == "active"
    assert machine.succeed(f"systemctl is-enabled {unit}").strip() == "enabled"
    # Started before the harness first logged in, so nobody but the boot started it.
    started = int(machine.succeed(
        f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").strip())
    first_login = machine.succeed(
        "journalctl -b -o short-monotonic -t sshd -g 'Accepted publickey' | head -n 1")
    login_us = float(first_login.split("]")[0].strip("[ ")) * 1e6
    assert 0 < started < login_us, (started, first_login)


def test_docker_info_answers(machine, record_property):
    version = machine.succeed("docker version --format '{{.Server.Version}}'").strip()
    driver = machine.succeed("docker info --format '{{.Driver}}'").strip()
    record_property("docker_version", version)
    record_property("storage_driver", driver)
    assert version and driver


def test_container_runs_from_image_loaded_offline(machine):
    loaded = machine.succeed("docker load", stdin=dockerimage.build())
    assert dockerimage.TAG in loaded
    out = machine.succeed(f"docker run --rm --network none {dockerimage.TAG} "
                          "echo hello-from-a-container")
    assert out.strip() == "hello-from-a-container"
