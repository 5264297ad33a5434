"""RancherOS v1.4.0 booted from its ISO, not installed to disk: every `docker run`
failed with "jailing process inside rootfs caused \\"pivot_root invalid argument\\""
(the root is in RAM, where pivot_root cannot work). The reporter saw v1.3.0's ISO
work. rancher/os#2423 ("Make sure that DOCKER_RAMDISK can be set correctly",
merged July 2018) fixed it; v1.5.8, released later from the same line, is the
fixed case here."""

import pytest

from harness.images import dockerimage

URL = "https://github.com/rancher/os/issues/2378"


@pytest.mark.vm
@pytest.mark.bug(url=URL, affected=["rancheros-14"], fixed=["rancheros"])
@pytest.mark.parametrize("bug_distro", ["rancheros-14", "rancheros"])
def test_docker_runs_a_container_from_an_uninstalled_iso_boot(bug_distro, boot_bug_distro):
    m = boot_bug_distro(bug_distro)  # the catalog boots the ISO itself: nothing installed
    m.succeed("docker load", stdin=dockerimage.build())
    result = m.run(f"docker run --rm --network none {dockerimage.TAG} true")
    if result.status != 0:
        log = m.run("dmesg | tail -n 20").stdout.strip()
        pytest.fail(f"docker run failed on {bug_distro}: {result.stderr.strip()}\n"
                    f"--- kernel ---\n{log}")
