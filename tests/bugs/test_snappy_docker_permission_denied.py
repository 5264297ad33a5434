"""Ubuntu Snappy 15.04 (2015): the comparison's author installed Docker as a
framework snap and "couldn't start any containers because of a permission denied
error". Snappy confined every snap with AppArmor; the daemon's profile allowed less
than running a container needs, so the kernel denied it and Docker reported
"permission denied".

Reproduced here by that mechanism on refos-snap (snapd 2.57, AppArmor, a strictly
confined docker snap built from Debian's binaries): with the docker-support plugs
disconnected, the snap's profile (snap.docker.dockerd) lacks the rules containers
need, and `docker run` fails. The bug's symptom is both ("permission denied" in
Docker's error) and the cause (an apparmor="DENIED" kernel line for the snap's
profile); any other failure is not this bug. The fix is shown beside it: with
the interfaces connected, as a store-signed docker snap gets them automatically, the
same `docker run` succeeds.

Upstream: no report of the 2015 Launchpad bug could be found, so the marker carries
no tracker link. The nearest upstream report is docker-snap/docker#5 (Ubuntu Core
16, Nov 2016): `snap.docker.dockerd` AppArmor DENIED, then "permission denied" from
Docker. snappy-1504 stays affected, for whoever has the 15.04 image and its docker
framework; no fixed release is claimed."""

import re
import shlex

import pytest

from harness import catalog
from harness.images import dockerimage
from harness.updates import snappy

NEAREST = "https://github.com/docker-snap/docker/issues/5"
SYMPTOM = "permission denied"  # as the 2015 report quotes Docker's error
SNAP_PROFILE = re.compile(r'apparmor="DENIED".*\bprofile="snap\.docker\.[^"]*"')
# The docker snap's plugs that the daemon needs to run containers (images/refos/snap/
# docker/meta/snap.yaml): disconnected, the bug; connected, the fix.
DAEMON_PLUGS = ("support", "privileged")
RUN = f"docker run --rm --network none {dockerimage.TAG} true"


DENIALS = "--- AppArmor denials of the docker snap's profiles ---"
# The bug is both: Docker said "permission denied", and the kernel denied the snap's
# profile (the failure message below puts the denials after DENIALS).
BUG = pytest.mark.bug(url="", nearest=NEAREST, affected=["refos-snap", "snappy-1504"],
                      fixed=[], symptom=rf"(?i){SYMPTOM}.*\n{re.escape(DENIALS)}\n"
                                        rf"[^\n]*{SNAP_PROFILE.pattern}")


def snap_denials(kernel_log: str) -> list[str]:
    """The kernel's AppArmor denials for the docker snap's own profiles."""
    return [line for line in kernel_log.splitlines() if SNAP_PROFILE.search(line)]


def failure(name: str, docker_error: str, kernel_log: str) -> str:
    """What a failed `docker run` reports: Docker's error, then the kernel's denials
    of the snap's profiles (BUG's symptom needs both)."""
    denials = "\n".join(snap_denials(kernel_log)[-10:]) or "(none)"
    return f"docker run failed on {name}: {docker_error.strip()}\n{DENIALS}\n{denials}"


def _kernel_log_since(m, since: str) -> str:
    stamp = shlex.quote(f"@{since}")
    return m.succeed(f"journalctl -k --no-pager -o short-precise --since {stamp}")


def _connect(m, connected: bool) -> None:
    verb = "connect" if connected else "disconnect"
    for plug in DAEMON_PLUGS:
        m.succeed(f"snap {verb} docker:{plug}")


def _restart_connected(m) -> None:
    """Connect the plugs and start the daemon afresh under the full profile, as it
    starts when the plugs are connected at install."""
    _connect(m, True)
    m.succeed("snap restart docker.dockerd")
    m.wait_until_succeeds("docker info >/dev/null")


def _reproduce_on_refos_snap(m) -> None:
    m.succeed("docker load", stdin=dockerimage.build())
    assert m.run(RUN).status == 0, "docker run must work before the plugs are disconnected"
    since = m.succeed("date +%s").strip()
    _connect(m, False)
    try:
        result = m.run(RUN)
        log = _kernel_log_since(m, since)
    finally:
        _restart_connected(m)
    assert result.status != 0, "docker run succeeded without docker-support: not reproduced"
    _fail("refos-snap", result, log)


def _fail(name: str, result, log: str) -> None:
    """A failed `docker run`: the plugin tells the bug (BUG's symptom) from another
    failure by this message."""
    pytest.fail(failure(name, result.stderr, log))


def _reproduce_on_snappy(m, name: str) -> None:
    parts = snappy.parse_list(m.succeed("snappy list -v"))
    if not any(p.name == "docker" for p in parts):
        note = catalog.get(name).promises.notes["docker"]
        pytest.skip(f"{name}: {note}; the store is out of reach, so boot an image "
                    "with the docker framework installed")
    since = m.succeed("date +%s").strip()
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(RUN)
    if result.status != 0:
        _fail(name, result, _kernel_log_since(m, since))


def _require_refos_snap(distro) -> None:
    if distro.name != "refos-snap":
        pytest.skip("this reproduction runs on refos-snap's own session: "
                    "pytest tests/bugs --distro=refos-snap")


@pytest.mark.vm
@BUG
@pytest.mark.parametrize("bug_distro", ["refos-snap", "snappy-1504"])
def test_docker_snap_runs_a_container(bug_distro, distro, boot_bug_distro):
    if bug_distro == "refos-snap":
        _require_refos_snap(distro)
        _reproduce_on_refos_snap(boot_bug_distro(bug_distro))
    else:
        _reproduce_on_snappy(boot_bug_distro(bug_distro), bug_distro)


@pytest.mark.vm
def test_connected_docker_support_fixes_the_permission_denied(distro, machine):
    """The fix, in the same place: the plugs connected, the same run succeeds."""
    _require_refos_snap(distro)
    _restart_connected(machine)
    connected = machine.succeed("snap connections docker")
    for plug in DAEMON_PLUGS:
        assert re.search(rf"docker:{plug}\s+:docker-support", connected), connected
    machine.succeed("docker load", stdin=dockerimage.build())
    result = machine.run(RUN)
    assert result.status == 0, f"docker run fails even with docker-support connected: {result}"
