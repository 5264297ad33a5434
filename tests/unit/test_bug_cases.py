"""The bug cases point at the report they reproduce, with the releases it affects
and the first that fixed it, and every distro they name is in the catalog."""

import subprocess
import sys

import pytest

from harness import catalog
from harness.paths import REPO
from harness.plugin import bugs
from tests.bugs import test_snappy_docker_permission_denied as snappy_case

CASES = bugs.collect()  # tests/bugs, as pytest collects it

# The daemon's error as moby/moby#44900 quotes it (Docker 23.0.0, Debian 11).
MOBY_44900 = ("Error response from daemon: AppArmor enabled on system but the docker-default "
              "profile could not be loaded: running `apparmor_parser apparmor_parser --version` "
              "failed with output: \nerror: exec: \"apparmor_parser\": executable file not found "
              "in $PATH\n")
# moby/moby#20554 (2016), a different failure: the daemon did not start at all.
MOBY_20554 = ("FATA[0000] Error starting daemon: AppArmor enabled on system but the "
              "docker-default profile could not be loaded.")
# canonical/docker-snap#95 (2023), another: the parser is there but cannot read its policy.
DOCKER_SNAP_95 = ("docker: Error response from daemon: AppArmor enabled on system but the "
                  "docker-default profile could not be loaded: running `/usr/sbin/apparmor_parser "
                  "apparmor_parser --version` failed with output: Failed to load policy-features "
                  "from '/etc/apparmor.d/abi/kernel-5.4-outoftree-network': Permission denied")


def test_apparmor_case_points_at_moby_44900_with_versions():
    case = bugs.find("docker_apparmor", CASES)
    assert case.bug.url == "https://github.com/moby/moby/issues/44900"
    assert case.bug.affected_versions == ("Docker Engine 23.0.0",)
    assert case.bug.fixed_versions[0].startswith("Docker Engine 23.0.1")


def test_apparmor_symptom_is_44900s_and_not_another_apparmor_failure():
    bug = bugs.find("docker_apparmor", CASES).bug
    assert bug.shows_in(MOBY_44900)
    assert not bug.shows_in(MOBY_20554)
    assert not bug.shows_in(DOCKER_SNAP_95)


# docker-snap/docker#5 (Ubuntu Core 16, 2016-11-09), as the report quotes them: the
# kernel's denial of the docker snap's daemon profile, then Docker's error.
DOCKER_SNAP_5_KERNEL = (
    'Nov  9 16:47:36 localhost kernel: [82650.637069] audit: type=1400 '
    'audit(1478710056.851:11530): apparmor="DENIED" operation="mkdir" '
    'profile="snap.docker.dockerd" name="/var/lib/snapd/hostfs/sys/fs/cgroup/cpuset/docker/" '
    'pid=10731 comm="docker-runc" requested_mask="c" denied_mask="c" fsuid=0 ouid=0')
DOCKER_SNAP_5_ERROR = ('oci runtime error: mkdir /var/lib/snapd/hostfs/sys/fs/cgroup/cpuset/'
                       'docker: permission denied')
# The same denial for Docker's own container profile, not the snap's (a different
# failure), in the kernel's audit format as above.
DOCKER_DEFAULT_DENIAL = DOCKER_SNAP_5_KERNEL.replace('profile="snap.docker.dockerd"',
                                                     'profile="docker-default"')


def _snappy_shows(error: str, kernel: str) -> bool:
    """Whether the case's failure message, as it writes it, shows its bug's symptom."""
    bug = bugs.find("snappy_docker_permission_denied", CASES).bug
    return bug.shows_in(snappy_case.failure("refos-snap", error, kernel))


def test_snappy_case_names_no_2015_report_and_the_nearest_upstream_one():
    bug = bugs.find("snappy_docker_permission_denied", CASES).bug
    assert bug.url == ""
    assert bug.nearest == "https://github.com/docker-snap/docker/issues/5"
    assert bug.link() == "no tracker link; nearest report " + bug.nearest
    assert set(bug.affected) == {"snappy-1504", "refos-snap"} and bug.fixed == ()


def test_snappy_case_takes_docker_snap_5s_failure_for_the_bug():
    assert snappy_case.snap_denials(f"other line\n{DOCKER_SNAP_5_KERNEL}\n") == \
        [DOCKER_SNAP_5_KERNEL]
    assert _snappy_shows(DOCKER_SNAP_5_ERROR, f"other line\n{DOCKER_SNAP_5_KERNEL}\n")


@pytest.mark.parametrize(("error", "kernel"), [
    (DOCKER_SNAP_5_ERROR, ""),  # the symptom with no denial: another cause
    (DOCKER_SNAP_5_ERROR, DOCKER_DEFAULT_DENIAL),  # a container's profile, not the snap's
    (DOCKER_SNAP_95, DOCKER_DEFAULT_DENIAL),
    ("docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock.",
     DOCKER_SNAP_5_KERNEL),  # a denial, but Docker did not say permission denied
])
def test_snappy_case_rejects_failures_that_lack_the_symptom_or_the_cause(error, kernel):
    assert not _snappy_shows(error, kernel)


# What refos-snap's docker snap said, and the kernel logged, with docker-support
# disconnected (`harness repro snappy_docker_permission_denied`, 2026-11-28).
REFOS_SNAP_ERROR = ("docker: Error response from daemon: error creating overlay mount to "
                    "/var/snap/docker/common/var-lib-docker/overlay2/ddb531b4c5c1-init/merged: "
                    "permission denied.")
REFOS_SNAP_KERNEL = (
    'Nov 28 15:34:58.285512 refos-snap-t9ee103 kernel: audit: type=1400 '
    'audit(1795880098.277:59): apparmor="DENIED" operation="mount" info="failed mntpnt '
    'match" error=-13 profile="snap.docker.dockerd" name="/var/snap/docker/common/'
    'var-lib-docker/overlay2/ddb531b4c5c1-init/merged/" pid=1031 comm="dockerd" '
    'fstype="overlay" srcname="overlay"')


def test_snappy_case_takes_refos_snaps_own_failure_for_the_bug():
    assert _snappy_shows(REFOS_SNAP_ERROR, REFOS_SNAP_KERNEL)


def test_repro_says_a_skipped_reproduction_was_not_tried(tmp_path):
    """Offline and without the 15.04 image the case skips before booting; that is
    not "did not reproduce". Run from another folder: the case is found all the same."""
    out = subprocess.run([sys.executable, "-m", "harness.cli", "repro",
                          "snappy_docker_permission_denied", "--distro", "snappy-1504",
                          "--offline", "--artifacts", str(REPO / "artifacts" / "unit-repro")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "harness repro: snappy-1504: not tried" in out.stdout, out.stdout + out.stderr


def test_pivot_root_case_checks_the_first_fixed_release_v141():
    bug = bugs.find("rancheros_pivot_root", CASES).bug
    assert bug.affected == ("rancheros-14",)
    assert bug.fixed[0] == "rancheros-141"
    assert "v1.4.1" in catalog.get("rancheros-141").title


def test_the_bug_cases_are_found_by_their_module_names_and_only_those():
    assert sorted(c.name for c in CASES) == [
        "docker_apparmor", "rancheros_pivot_root", "snappy_docker_permission_denied"]
    with pytest.raises(LookupError, match="known: docker_apparmor, rancheros_pivot_root"):
        bugs.find("docker", CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_distro_a_bug_case_names_is_in_the_catalog(case):
    for distro in case.bug.affected + case.bug.fixed:
        catalog.get(distro)


def test_the_library_imports_no_test_module():
    """harness/ finds the cases through pytest, never by importing tests/."""
    code = ("import sys, harness.cli, harness.plugin, harness.plugin.bugs; "
            "print(sorted(m for m in sys.modules if m.startswith('tests')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
