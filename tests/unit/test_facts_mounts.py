"""The root filesystem fact says "ostree" when OSTree booted a deployment.

The inputs are the lines the fact's command prints: findmnt's `TARGET FSTYPE
OPTIONS`, led by `ostree` when /run/ostree-booted exists (the flag OSTree's
initramfs leaves; ostreedev/ostree src/switchroot/ostree-mount-util.h @ v2022.7)."""

from harness.report.facts import _mount


def test_mount_under_an_ostree_deployment_is_reported_as_ostree():
    assert _mount("ostree / ext4 rw,relatime\n") == "ostree: ext4 (rw,relatime) on /"


def test_mount_without_the_ostree_flag_is_reported_as_is():
    assert _mount("/ squashfs ro,relatime\n") == "squashfs (ro,relatime) on /"


def test_unexpected_findmnt_output_is_not_a_value():
    assert _mount("/ squashfs\n") is None
