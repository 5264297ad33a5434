"""Docker: the daemon comes up by itself and runs containers, with no registry."""

import pytest

from harness.images import dockerimage
from tests.bugs.known import MOBY_44900

pytestmark = pytest.mark.vm


def _started(machine, distro):
    """Where Docker is started by hand (the promise says `manual`), start it as a user would."""
    if distro.promises.docker == "manual":
        machine.succeed(f"systemctl start {distro.promises.docker_unit}")
    return machine


@pytest.mark.promise("docker_at_boot")
def test_docker_is_active_after_boot_without_anyone_starting_it(machine, distro):
    unit = distro.promises.docker_unit
    assert machine.succeed(f"systemctl is-active {unit}").strip() == "active"
    assert machine.succeed(f"systemctl is-enabled {unit}").strip() == "enabled"
    # Its start began before systemd finished starting the system: the boot started
    # it, not someone after it. (Not "before the first login": refos-snap's first boot
    # installs its snaps and then starts dockerd, with sshd long up.) Both are
    # CLOCK_MONOTONIC in microseconds: the manager's FinishTimestampMonotonic and a
    # unit's InactiveExitTimestampMonotonic (systemd's org.freedesktop.systemd1(5)).
    began, finished = (int(machine.succeed(f"systemctl show -p {p} --value {of}").strip())
                       for p, of in (("InactiveExitTimestampMonotonic", unit),
                                     ("FinishTimestampMonotonic", "")))
    assert 0 < began < finished, (began, finished)


@pytest.mark.promise("docker_shipped")
def test_docker_info_answers(machine, distro, record_testsuite_property):
    _started(machine, distro)
    version = machine.succeed("docker version --format '{{.Server.Version}}'").strip()
    driver = machine.succeed("docker info --format '{{.Driver}}'").strip()
    # The distro's, so the run's (junit's xunit2 has no per-test properties).
    record_testsuite_property("docker_version", version)
    record_testsuite_property("storage_driver", driver)
    assert version and driver


@pytest.mark.promise("docker_shipped")
@MOBY_44900  # refos-noapparmor's Docker starts no container
def test_container_runs_from_image_loaded_offline(machine, distro):
    _started(machine, distro)
    loaded = machine.succeed("docker load", stdin=dockerimage.build())
    assert dockerimage.TAG in loaded
    out = machine.succeed(f"docker run --rm --network none {dockerimage.TAG} "
                          "echo hello-from-a-container")
    assert out.strip() == "hello-from-a-container"
