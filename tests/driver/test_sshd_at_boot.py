"""What stands between sshd starting and the harness's first command.

The guest boots with every host key the seed gave it and makes none of its own:
making them under TCG (ssh-keygen -A's RSA key) held sshd back for about 25 s. On
refos, sshd listens only once users may log in, and its work for a connection
outweighs the rest of the boot (images/refos/overlay/etc/systemd/system/
ssh.service.d/20-refos-first-login.conf)."""

import pytest

pytestmark = pytest.mark.vm


def test_the_guest_uses_the_given_host_keys_and_generates_none(machine):
    if not machine.seed.host_key_given:
        pytest.skip(f"{machine.distro.name}'s seed cannot carry host keys")
    guest = machine.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert guest == machine.host_key.public.split()[:2]
    # The machine that booted (a restored one's template) kept the spares it gave;
    # a save from an earlier session keeps only the trusted key.
    booted = getattr(machine.template, "dir", None) or machine.dir
    for kind in ("rsa", "ecdsa"):
        guest = machine.succeed(f"cat /etc/ssh/ssh_host_{kind}_key.pub").split()[:2]
        given = booted / "keys" / f"ssh_host_{kind}_key.pub"
        if given.exists():
            assert guest == given.read_text().split()[:2], kind
    # ssh-keygen -A's line, or ssh-keygen's own when cloud-init runs it ([g]: not
    # this command's own line, which sudo logs).
    made = machine.run("journalctl -b --no-pager | grep -i "
                       "'[g]enerating new host keys\\|[g]enerating public/private'")
    assert made.stdout == "", f"the guest made host keys at boot:\n{made.stdout}"


def test_refos_sshd_listens_when_logins_are_permitted_and_outweighs_the_boot(distro, request):
    if not distro.name.startswith("refos"):
        pytest.skip(f"{distro.name} is not built here: its sshd unit is its own")
    machine = request.getfixturevalue("machine")
    # systemd ignores a misspelt key with only a warning: ask what it took.
    shown = machine.succeed("systemctl show -p After -p StartupCPUWeight ssh.service")
    fields = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert "systemd-user-sessions.service" in fields["After"].split()
    assert fields["StartupCPUWeight"] == "10000"
