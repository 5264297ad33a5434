"""The seed carries every host key type the guest's sshd wants, so the guest makes
none at boot (harness.seed.keys); only the ed25519 key is ever trusted."""

import json

import pytest

from harness import seed
from harness.seed import keys
from tests.unit.test_seed import _require_cloud_init, cloud_init_read, ignition_validate


@pytest.fixture(scope="module")
def spare_intent(tmp_path_factory) -> seed.Intent:
    d = tmp_path_factory.mktemp("keys")
    return seed.Intent(hostname="spare-test", user="refos",
                       authorized_keys=(keys.generate(d, "id", "client").public,),
                       host_key=keys.generate(d, "host", "guest"),
                       spare_host_keys=keys.spare_host_keys(d, "guest"))


def test_spare_host_keys_are_rsa_and_ecdsa_in_private_files(spare_intent):
    assert [k.kind for k in spare_intent.spare_host_keys] == ["rsa", "ecdsa"]
    for key in spare_intent.spare_host_keys:
        assert key.private_path.stat().st_mode & 0o777 == 0o600


def test_cloud_init_reads_all_three_host_keys_from_nocloud(spare_intent, tmp_path):
    _require_cloud_init()
    media = seed.build("nocloud", spare_intent, tmp_path)
    got = cloud_init_read("nocloud", media.disk, tmp_path)
    assert got["schema_error"] == ""
    ssh_keys = got["config"]["ssh_keys"]
    given = (spare_intent.host_key, *spare_intent.spare_host_keys)
    assert sorted(ssh_keys) == sorted(f"{kind}_{part}" for kind in ("ed25519", "rsa", "ecdsa")
                                      for part in ("private", "public"))
    for key in given:
        assert ssh_keys[f"{key.kind}_public"] == key.public
        assert ssh_keys[f"{key.kind}_private"] == key.private_pem
    assert media.host_key_given


def test_ignition_writes_all_three_host_keys_private(spare_intent, tmp_path):
    media = seed.build("ignition", spare_intent, tmp_path)
    ((_, path),) = media.fw_cfg
    ignition_validate(path)
    files = {f["path"]: f["mode"] for f in json.loads(path.read_text())["storage"]["files"]}
    for kind in ("ed25519", "rsa", "ecdsa"):
        assert files[f"/etc/ssh/ssh_host_{kind}_key"] == 0o600
        assert files[f"/etc/ssh/ssh_host_{kind}_key.pub"] == 0o644
