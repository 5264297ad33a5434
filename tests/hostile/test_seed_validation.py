"""Seed input that would smuggle a second line, a second key or a quote into what
the guest reads, or exhaust the harness's memory while parsing, is refused."""

import re

import pytest

from harness import seed
from harness.seed import cloudconfig

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHarnessHostileTestKeyAAAAAAAAAAAAAAAAAAAAA test"


def _intent(extra) -> seed.Intent:
    return seed.Intent(hostname="guest", user="admin", authorized_keys=(KEY,), extra=extra)


@pytest.mark.parametrize("extra, field", [
    ({"users": [{"name": "alice\n"}]}, "users[0].name"),
    ({"units": [{"name": "x.service\n", "content": "[Service]\n"}]}, "units[0].name"),
    ({"write_files": [{"path": "/etc/x", "content": "x", "permissions": "0644\n"}]},
     "write_files[0].permissions"),
], ids=["user-name", "unit-name", "permissions"])
def test_seed_refuses_trailing_newline(extra, field):
    with pytest.raises(seed.SeedError, match=re.escape(f"extra.{field}")):
        _intent(extra)


def test_seed_refuses_host_name_and_user_with_trailing_newline():
    with pytest.raises(seed.SeedError, match="hostname"):
        seed.Intent(hostname="guest\n", user="admin", authorized_keys=(KEY,))
    with pytest.raises(seed.SeedError, match="user"):
        seed.Intent(hostname="guest", user="admin\n", authorized_keys=(KEY,))


def test_seed_refuses_authorized_key_that_smuggles_a_second_key():
    smuggled = KEY + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKey attacker"
    with pytest.raises(seed.SeedError, match="ssh_authorized_keys"):
        _intent({"users": [{"name": "alice", "ssh_authorized_keys": [smuggled]}]})
    with pytest.raises(seed.SeedError, match="authorized_keys"):
        seed.Intent(hostname="guest", user="admin", authorized_keys=(smuggled,))


def test_rancher_cmdline_refuses_double_quote():
    """The kernel's command line parser treats '"' as quoting: one unmatched '"'
    swallows every later argument (ours and the boot loader's) into this value."""
    intent = _intent({"rancher": {"console": 'ttyS0"'}})
    with pytest.raises(seed.SeedError, match=re.escape("extra.rancher.console")):
        cloudconfig.rancher_cmdline(cloudconfig.rancher(intent))


BILLION_LAUGHS = """
cloud_config:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_yaml_alias_bomb_in_extra_is_refused_before_it_expands():
    """Aliases share objects while parsed, but every writer expands them: a few
    hundred bytes became hundreds of MiB. No configuration needs aliases."""
    with pytest.raises(seed.SeedError, match="aliases"):
        _intent(BILLION_LAUGHS)


def test_oversized_extra_is_refused_before_parsing():
    """PyYAML would take minutes on 18 MiB. Its first character is one YAML refuses at
    once: had the parser seen it, the error would say "not valid YAML"."""
    with pytest.raises(seed.SeedError, match="not valid YAML"):
        _intent("@runcmd:\n- echo x\n")
    huge = "@runcmd:\n" + "- echo x\n" * (2 * 2**20)  # 18 MiB of YAML
    with pytest.raises(seed.SeedError, match="more than any seed medium takes"):
        _intent(huge)
