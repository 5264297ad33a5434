"""Read-only root: promised read-only paths refuse writes; writable ones keep them."""

import shlex

import pytest

pytestmark = pytest.mark.vm


@pytest.mark.promise("readonly")
def test_promised_readonly_paths_are_mounted_readonly(machine, distro):
    for path in distro.promises.readonly:
        options = machine.succeed(f"findmnt -no OPTIONS --target {shlex.quote(path)}").split(",")
        assert "ro" in options, f"{path} is mounted {options}"


@pytest.mark.promise("readonly")
def test_promised_readonly_paths_refuse_writes_with_erofs(machine, distro):
    for path in distro.promises.readonly:
        probe = shlex.quote(f"{path.rstrip('/')}/.harness-write-probe")
        result = machine.fail(f"touch {probe}")
        assert "Read-only file system" in result.stderr, result.stderr


@pytest.mark.destructive
@pytest.mark.promise("writable")
def test_promised_writable_paths_keep_a_write_across_reboot(machine_factory, distro):
    m = machine_factory("writable")
    for path in distro.promises.writable:
        m.succeed(f"echo kept > {shlex.quote(path.rstrip('/') + '/.harness-kept')}")
    m.reboot()
    for path in distro.promises.writable:
        kept = m.succeed(f"cat {shlex.quote(path.rstrip('/') + '/.harness-kept')}")
        assert kept.strip() == "kept", path
