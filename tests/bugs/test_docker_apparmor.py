"""Docker cannot start containers when the kernel has AppArmor on but the
`apparmor` package (apparmor_parser) is missing: "AppArmor enabled on system but
the docker-default profile could not be loaded: running `apparmor_parser
apparmor_parser --version` failed ... executable file not found in $PATH".
That is moby/moby#44900, reported against Docker Engine 23.0.0; 23.0.1 fixed it
with moby#44942 (the 23.0 backport of #44902) and 23.0.2 finished the fix with
moby#45043 (the Engine 23.0 release notes, https://docs.docker.com/engine/release-notes/23.0/).
moby#20554 (2016) is another failure: a profile that did not parse.

The same class of failure as the 2015 Ubuntu Snappy "permission denied" report.
refos-noapparmor is built to have it (Debian's docker.io without the apparmor
package); refos, with the package, is the fixed case."""

import re

import pytest

from harness import catalog
from harness.images import dockerimage

URL = catalog.get("refos-noapparmor").reproduces[0].url  # one source: the catalog
AFFECTED_VERSIONS = ["Docker Engine 23.0.0"]
FIXED_VERSIONS = ["Docker Engine 23.0.1 (moby#44942)", "Docker Engine 23.0.2 (moby#45043)"]
# The message #44900 quotes; the path before apparmor_parser varies by build.
SYMPTOM = re.compile(r"AppArmor enabled on system but the docker-default profile could not be "
                     r"loaded: .*apparmor_parser.*--version.*executable file not found in \$PATH",
                     re.DOTALL)


@pytest.mark.vm
@pytest.mark.bug(url=URL, affected=["refos-noapparmor"], fixed=["refos"],
                 affected_versions=AFFECTED_VERSIONS, fixed_versions=FIXED_VERSIONS)
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
        assert SYMPTOM.search(result.stderr), f"docker run failed, but not with the bug: {result}"
        pytest.fail(f"reproduced on {bug_distro}: {result.stderr.strip()}")
