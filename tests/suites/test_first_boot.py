"""First-boot configuration applied in a real boot: refos given a NoCloud seed
and, in another boot, a config-2 seed, with a test's extra configuration.

refos's cloud-init reads both (datasource_list: NoCloud, ConfigDrive, None);
the seeds are written by harness.seed, as every other distro's are."""

import pytest

pytestmark = pytest.mark.vm

UNIT = ("[Unit]\nDescription=harness seed marker\n\n[Service]\nType=oneshot\n"
        "RemainAfterExit=yes\nExecStart=/bin/sh -c 'echo unit > /run/harness-unit-ran'\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
EXTRA = {
    "users": [{"name": "seeduser", "groups": ["docker"], "shell": "/bin/sh"}],
    "write_files": [{"path": "/etc/harness-seeded", "content": "from the seed\n",
                     "permissions": "0640"}],
    "runcmd": ["echo ran > /var/lib/harness-runcmd-ran"],
    "units": [{"name": "harness-marker.service", "content": UNIT}],
}
DATASOURCE = {"nocloud": "DataSourceNoCloud", "config-2": "DataSourceConfigDrive"}


def _refos_only(distro) -> None:
    if distro.family != "refos":
        pytest.skip(f"{distro.name}: only refos is booted with a chosen seed format "
                    f"(its own is {distro.boot.seed}, checked by tests/unit/test_seed.py)")
    if distro.boot.seed != "nocloud":
        pytest.skip(f"{distro.name}: has no cloud-init, it reads {distro.boot.seed} only "
                    "(tests/driver/test_ignition.py boots it with its own seed)")


@pytest.mark.destructive
@pytest.mark.parametrize("seed_format", ["nocloud", "config-2"])
def test_refos_applies_the_seed_and_its_extra_configuration(seed_format, machine_factory,
                                                             distro):
    _refos_only(distro)
    name = f"seed-{seed_format}".replace("config-2", "configdrive")
    m = machine_factory(name, extra_config=EXTRA, seed_format=seed_format)
    datasource = m.succeed("cat /var/lib/cloud/instance/datasource")
    assert DATASOURCE[seed_format] in datasource, datasource
    assert m.succeed("hostname").strip() == m.hostname  # the seed's (a restore keeps it)
    assert m.succeed("cat /etc/harness-seeded") == "from the seed\n"
    assert m.succeed("stat -c %a /etc/harness-seeded").strip() == "640"
    assert m.succeed("cat /var/lib/harness-runcmd-ran").strip() == "ran"
    assert m.succeed("cat /run/harness-unit-ran").strip() == "unit"
    assert m.succeed("systemctl is-enabled harness-marker.service").strip() == "enabled"
    assert "docker" in m.succeed("id -nG seeduser").split()
    # The host key came from the seed: the harness verified it on every connection.
    assert m.seed.host_key_given
    assert m.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] == \
        m.host_key.public_blob
