"""RancherOS v1.4.0 booted from its ISO, not installed to disk: every `docker run`
failed with "jailing process inside rootfs caused \\"pivot_root invalid argument\\""
(the root is in RAM, where pivot_root cannot work). The reporter saw v1.3.0's ISO
work. rancher/os#2423 ("Make sure that DOCKER_RAMDISK can be set correctly") fixed
it; its commit on the 1.4 line, d513c3be, is first in v1.4.1 (`git tag --contains`
lists v1.4.1-rc1 and later, not v1.4.0). v1.4.1, the first fixed release, and
v1.5.8, the last, are the fixed cases.

The v1.4 entries boot with 2 GiB: v1.4 panics at boot in 1 GiB (rancher/os#2372,
#2396, #2397), and 1280 MiB, which booted in #2372, is too close for a panic not
to pass for the bug."""

import re

import pytest

from harness.images import dockerimage

URL = "https://github.com/rancher/os/issues/2378"
SYMPTOM = "pivot_root invalid argument"  # as rancher/os#2378 quotes Docker's error


@pytest.mark.vm
@pytest.mark.bug(url=URL, affected=["rancheros-14"], fixed=["rancheros-141", "rancheros"],
                 affected_versions=["v1.4.0"], fixed_versions=["v1.4.1", "v1.5.8"],
                 symptom=re.escape(SYMPTOM))
@pytest.mark.parametrize("bug_distro", ["rancheros-14", "rancheros-141", "rancheros"])
def test_docker_runs_a_container_from_an_uninstalled_iso_boot(bug_distro, boot_bug_distro):
    m = boot_bug_distro(bug_distro)  # the catalog boots the ISO itself: nothing installed
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(f"docker run --rm --network none {dockerimage.TAG} true")
    if result.status != 0:  # the plugin tells the bug (the symptom) from another failure
        log = m.run("dmesg | tail -n 20").stdout.strip()
        pytest.fail(f"docker run failed on {bug_distro}: {result.stderr.strip()}\n"
                    f"--- kernel ---\n{log}")
