"""Docker cannot start containers when the kernel has AppArmor on but the
`apparmor` package (apparmor_parser) is missing: "AppArmor enabled on system
but the docker-default profile could not be loaded". The same class of failure
as the 2015 Ubuntu Snappy "permission denied" report. refos-noapparmor is built
to have it; refos, with the package, is the fixed case."""

import pytest

from harness import catalog
from harness.images import dockerimage

URL = "https://github.com/moby/moby/issues/20554"
SYMPTOM = "AppArmor enabled on system but the docker-default profile could not be loaded"


@pytest.mark.vm
@pytest.mark.bug(url=URL, affected=["refos-noapparmor"], fixed=["refos"])
@pytest.mark.parametrize("bug_distro", ["refos-noapparmor", "refos"])
def test_docker_run_works_with_apparmor_enabled_kernel(bug_distro, distro, request,
                                                       machine_factory):
    if distro.family != "refos":
        pytest.skip(f"{distro.name}: this reproduction needs the refos images, built here")
    if bug_distro == distro.name:
        m = request.getfixturevalue("machine")
    else:
        m = machine_factory(f"bug-{bug_distro}", distro=catalog.get(bug_distro))
    assert m.succeed("cat /sys/module/apparmor/parameters/enabled").strip() == "Y"
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(f"docker run --rm --network none {dockerimage.TAG} true")
    if result.status != 0:
        assert SYMPTOM in result.stderr, f"docker run failed, but not with the bug: {result}"
        pytest.fail(f"reproduced on {bug_distro}: {result.stderr.strip()}")
