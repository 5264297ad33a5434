"""Bugs that more than one test meets, one `bug` marker each, so the reproduction in
tests/bugs and the suite tests the bug makes fail share its report, its distros and
its symptom (harness.plugin.bugs)."""

import pytest

# moby/moby#44900: Docker cannot start containers when the kernel has AppArmor on but
# the `apparmor` package (apparmor_parser) is missing. Reported against Docker Engine
# 23.0.0; 23.0.1 fixed it with moby#44942 (the 23.0 backport of #44902) and 23.0.2
# finished the fix with moby#45043 (https://docs.docker.com/engine/release-notes/23.0/).
# refos-noapparmor is built to have it; refos, with the package, is the fixed case.
# The symptom is the message #44900 quotes; the path before apparmor_parser varies.
MOBY_44900 = pytest.mark.bug(
    url="https://github.com/moby/moby/issues/44900",
    affected=["refos-noapparmor"], fixed=["refos"],
    affected_versions=["Docker Engine 23.0.0"],
    fixed_versions=["Docker Engine 23.0.1 (moby#44942)", "Docker Engine 23.0.2 (moby#45043)"],
    symptom=r"AppArmor enabled on system but the docker-default profile could not be "
            r"loaded: .*apparmor_parser.*--version.*executable file not found in \$PATH")
