"""Docker cannot start containers when the kernel has AppArmor on but the
`apparmor` package (apparmor_parser) is missing: "AppArmor enabled on system but
the docker-default profile could not be loaded: running `apparmor_parser
apparmor_parser --version` failed ... executable file not found in $PATH".
That is moby/moby#44900 (its marker, with the releases, in tests/bugs/known.py).
moby#20554 (2016) is another failure: a profile that did not parse.

The same class of failure as the 2015 Ubuntu Snappy "permission denied" report.
refos-noapparmor is built to have it (Debian's docker.io without the apparmor
package); refos, with the package, is the fixed case."""

import pytest

from harness.images import dockerimage
from tests.bugs.known import MOBY_44900


@pytest.mark.vm
@MOBY_44900
@pytest.mark.parametrize("bug_distro", ["refos-noapparmor", "refos"])
def test_docker_run_works_with_apparmor_enabled_kernel(bug_distro, distro, boot_bug_distro):
    if distro.family != "refos":
        pytest.skip(f"{distro.name}: this reproduction needs the refos images, built here")
    m = boot_bug_distro(bug_distro)
    assert m.succeed("cat /sys/module/apparmor/parameters/enabled").strip() == "Y"
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(f"docker run --rm --network none {dockerimage.TAG} true")
    if result.status != 0:  # the plugin tells the bug (the symptom) from another failure
        pytest.fail(f"docker run failed on {bug_distro}: {result.stderr.strip()}")
