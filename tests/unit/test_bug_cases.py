"""The bug cases point at the report they reproduce, with the releases it affects
and the first that fixed it, and every distro they name is in the catalog."""

import pytest

from harness import catalog
from harness.plugin import bugs
from tests.bugs import test_docker_apparmor as apparmor_case

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
    case = bugs.find("docker_apparmor")
    assert case.url == "https://github.com/moby/moby/issues/44900"
    assert apparmor_case.AFFECTED_VERSIONS == ["Docker Engine 23.0.0"]
    assert apparmor_case.FIXED_VERSIONS[0].startswith("Docker Engine 23.0.1")


def test_apparmor_symptom_is_44900s_and_not_another_apparmor_failure():
    assert apparmor_case.SYMPTOM.search(MOBY_44900)
    assert not apparmor_case.SYMPTOM.search(MOBY_20554)
    assert not apparmor_case.SYMPTOM.search(DOCKER_SNAP_95)


def test_pivot_root_case_checks_the_first_fixed_release_v141():
    case = bugs.find("rancheros_pivot_root")
    assert case.affected == ("rancheros-14",)
    assert case.fixed[0] == "rancheros-141"
    assert "v1.4.1" in catalog.get("rancheros-141").title


@pytest.mark.parametrize("name", bugs.known())
def test_every_distro_a_bug_case_names_is_in_the_catalog(name):
    case = bugs.find(name)
    for distro in case.affected + case.fixed:
        catalog.get(distro)
