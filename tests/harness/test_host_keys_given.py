"""The guest boots with every host key the seed gave it and makes none of its own:
making them under TCG (ssh-keygen -A's RSA key) held sshd back for about 25 s."""

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
