"""Ignition for real: refos-ignition boots through Debian's Ignition 2.14 in a
dracut initramfs, given the harness's config through QEMU fw_cfg
(opt/com.coreos/config), as Fedora CoreOS and Flatcar are.

Whatever the session's --distro, these boot refos-ignition (it is built here).
Cost: one cold boot (the saved template), restores, one reboot, one failing boot."""

import json
import shutil
import subprocess
import threading
import time

import pytest

from harness import catalog
from harness.report import facts
from harness.vm import storage
from harness.vm.machine import BootFailure, Machine

pytestmark = pytest.mark.vm

NAME = "refos-ignition"
UNIT = ("[Unit]\nDescription=harness unit enabled by Ignition\n\n[Service]\nType=oneshot\n"
        "RemainAfterExit=yes\nExecStart=/bin/sh -c 'echo ignition > /run/harness-unit-ran'\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
EXTRA = {
    "write_files": [{"path": "/etc/harness-ignition", "content": "from Ignition\n",
                     "permissions": "0640"},
                    {"path": "/var/lib/harness/ignition", "content": "in /var\n",
                     "permissions": "0600"}],
    "units": [{"name": "harness-ignition.service", "content": UNIT}],
}
# Valid for ignition-validate, impossible to apply: /usr is the read-only squashfs slot.
UNAPPLIABLE = {"write_files": [{"path": "/usr/harness-cannot-be-written",
                                "content": "never\n", "permissions": "0644"}]}
STAGES = ("fetch-offline", "kargs", "disks", "mount", "files")


@pytest.fixture(scope="module")
def ignition_distro() -> catalog.Distro:
    return catalog.load()[NAME]


@pytest.fixture
def configured(machine_factory, ignition_distro):
    """refos-ignition restored from the save of its first boot with EXTRA."""
    return machine_factory("ignition", extra_config=EXTRA, distro=ignition_distro)


def _ignition_journal(m: Machine, boot: str = "0") -> str:
    """What Ignition and its stage units logged in one boot (the initramfs's journal
    is carried into the booted system's)."""
    units = " ".join(f"-u ignition-{s}.service" for s in STAGES)
    return m.succeed(f"journalctl -b {boot} -o cat --no-pager -t ignition; "
                     f"journalctl -b {boot} -o cat --no-pager {units}")


def test_ignition_applied_the_harness_config_on_first_boot(configured):
    m = configured
    assert m.template is not None and "restore" in m.timings  # a restore from the save
    cmdline = m.succeed("cat /proc/cmdline")
    assert "ignition.firstboot" in cmdline and "ignition.platform.id=qemu" in cmdline
    journal = _ignition_journal(m)
    for stage in STAGES:
        assert f"Finished Ignition ({stage})" in journal or \
            f"Finished ignition-{stage}.service" in journal, f"stage {stage}:\n{journal}"
    assert 'fetched user config from "qemu"' in journal, journal
    assert 'writing file "/sysroot/etc/harness-ignition"' in journal, journal
    assert 'creating or modifying user "core"' in journal, journal
    assert m.fail("command -v cloud-init").status != 0  # nothing else configured it
    assert facts.gather(m)["first_boot"].value == "Ignition"  # the report's fact


def test_ignition_made_core_with_the_harness_key_and_the_pinned_host_key(configured):
    m = configured
    assert m.succeed("id -un").strip() == "root"  # via core's sudo, from the base config
    assert {"sudo", "docker"} <= set(m.succeed("id -nG core").split())
    keys = m.succeed("cat /home/core/.ssh/authorized_keys.d/ignition")
    assert m.client_key.public.split()[1] in keys
    # The harness checked this key on every connection; it is also the one on disk.
    assert m.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] == \
        m.host_key.public_blob
    assert m.succeed("stat -c %a /etc/ssh/ssh_host_ed25519_key").strip() == "600"


def test_ignition_enabled_the_unit_and_wrote_files_with_their_modes(configured):
    m = configured
    assert m.succeed("systemctl is-active harness-ignition.service").strip() == "active"
    assert m.succeed("systemctl is-enabled harness-ignition.service").strip() == "enabled"
    assert m.succeed("cat /run/harness-unit-ran").strip() == "ignition"
    assert m.succeed("stat -c %a /etc/harness-ignition").strip() == "640"
    assert m.succeed("cat /etc/harness-ignition") == "from Ignition\n"
    assert m.succeed("stat -c %a /var/lib/harness/ignition").strip() == "600"
    # Written through the STATE overlays laid in the initramfs, not into the slot.
    assert m.succeed("ls /state/etc/upper/harness-ignition").strip()
    assert m.succeed("hostname").strip() == m.hostname


@pytest.mark.destructive
def test_second_boot_runs_no_ignition_and_keeps_what_it_wrote(configured):
    m = configured
    assert not m.succeed("ls /efi/loader/entries").count("refos-firstboot.conf")
    m.reboot()
    assert "ignition.firstboot" not in m.succeed("cat /proc/cmdline")
    assert _ignition_journal(m, "0").strip() == ""
    assert "Ignition finished successfully" in _ignition_journal(m, "-1")
    assert m.succeed("cat /etc/harness-ignition") == "from Ignition\n"
    assert m.succeed("systemctl is-active harness-ignition.service").strip() == "active"
    assert m.client_key.public.split()[1] in \
        m.succeed("cat /home/core/.ssh/authorized_keys.d/ignition")


def _validates(config: bytes, tmp_path) -> None:
    if shutil.which("ignition-validate") is None:
        pytest.skip("ignition-validate (Debian package ignition) is not installed")
    path = tmp_path / "config.ign"
    path.write_bytes(config)
    subprocess.run(["ignition-validate", str(path)], check=True)


def test_unappliable_config_fails_the_boot_with_ignitions_error(harness_session,
                                                                 ignition_distro, tmp_path):
    m = harness_session.new_machine(
        "ignition-fails", harness_session.spec(ignition_distro, extra_config=UNAPPLIABLE))
    seen: list[float] = []

    def watch_console() -> None:  # when Ignition's verdict reached the console
        while not seen and time.monotonic() - started < 600:
            try:
                if "Ignition failed" in m.console_log.read_text(errors="replace"):
                    seen.append(time.monotonic())
            except OSError:
                pass
            time.sleep(0.2)

    started = time.monotonic()
    watcher = threading.Thread(target=watch_console, daemon=True)
    watcher.start()
    with pytest.raises(BootFailure, match="Ignition failed") as failure:
        m.start()
    raised = time.monotonic()
    watcher.join(5)
    _validates((m.dir / "config.ign").read_bytes(), tmp_path)
    message = str(failure.value)
    assert "/usr/harness-cannot-be-written" in message, message
    # The console's verdict ended the boot (seen first), not the boot's timeout.
    assert seen and seen[0] <= raised and "not within" not in message, message
    # Nothing left: no domain, no volume, no port.
    assert m.res.domain is None and not m.res.volumes and m.res.port is None
    conn = harness_session.conn
    names = storage.pool(conn).listVolumes()
    assert not [n for n in names if n.startswith(m.volume(""))], names
    assert harness_session.run.domain_name(m.id) not in [d.name() for d in conn.listAllDomains()]


def test_the_config_given_is_the_one_ignition_read(configured):
    """The fw_cfg item the guest sees is byte for byte the config the harness wrote."""
    m = configured
    given = json.loads((m.template.dir / "config.ign").read_text())
    key = m.distro.boot.seed_options["fw_cfg"]
    seen = m.succeed(f"cat /sys/firmware/qemu_fw_cfg/by_name/{key}/raw")
    assert json.loads(seen) == given
