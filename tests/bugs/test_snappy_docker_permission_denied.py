"""Ubuntu Snappy 15.04 (edge, 2015): `docker run` from the docker framework failed
with "permission denied", because AppArmor confined the framework's daemon more
tightly than running containers needs.

No tracker link is recorded: no Launchpad bug or GitHub issue for the 15.04
framework report was found, so the marker carries none rather than a guess. Only
the affected release is listed; no fixed release is claimed for want of evidence."""

import pytest

from harness import catalog
from harness.images import dockerimage
from harness.updates import snappy

SYMPTOM = "permission denied"  # as the 2015 report quotes Docker's error


def apparmor_denials(m, lines: int = 20) -> str:
    """The kernel's latest AppArmor denials: the evidence of a confinement failure."""
    return m.run(f"journalctl -k -b --no-pager | grep 'apparmor=\"DENIED\"' | tail -n {lines}"
                 ).stdout.strip() or "(none logged)"


@pytest.mark.vm
@pytest.mark.bug(url="", affected=["snappy-1504"], fixed=[])
@pytest.mark.parametrize("bug_distro", ["snappy-1504"])
def test_docker_framework_runs_a_container(bug_distro, boot_bug_distro):
    m = boot_bug_distro(bug_distro)
    parts = snappy.parse_list(m.succeed("snappy list -v"))
    if not any(p.name == "docker" for p in parts):
        note = catalog.get(bug_distro).promises.notes["docker"]
        pytest.skip(f"{bug_distro}: {note}; the store is out of reach, so boot an image "
                    "with the docker framework installed")
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(f"docker run --rm --network none {dockerimage.TAG} true")
    if result.status != 0:
        assert SYMPTOM in result.stderr.lower(), f"docker run failed, but not with the bug: " \
                                                 f"{result}"
        pytest.fail(f"reproduced on {bug_distro}: {result.stderr.strip()}\n"
                    f"--- AppArmor denials ---\n{apparmor_denials(m)}")
