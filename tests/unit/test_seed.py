"""First-boot media for every catalog distro, read back by the real parser of
its format: cloud-init's own datasource code for NoCloud and config-2 ISOs,
`ignition-validate` for Ignition. Bad input is refused before anything boots."""

import json
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from harness import catalog, seed
from harness.seed import keys

READER = Path(__file__).with_name("cloudinit_reader.py")
SYSTEM_PYTHON = "/usr/bin/python3"
UNIT = "[Unit]\nDescription=marker\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n" \
       "[Install]\nWantedBy=multi-user.target\n"
EXTRA = {
    "users": [{"name": "alice", "sudo": True, "ssh_authorized_keys": []}],
    "write_files": [{"path": "/etc/harness-marker", "content": "written\n",
                     "permissions": "0640"}],
    "runcmd": ["touch /var/tmp/harness-ran"],
    "units": [{"name": "harness-marker.service", "content": UNIT}],
}
# What each format can take of EXTRA (RancherOS has no users or units; Snappy nothing).
CAN_TAKE = {"rancher": ("write_files", "runcmd"), "none": ()}


def _has_cloud_init() -> bool:
    return subprocess.run([SYSTEM_PYTHON, "-c", "import cloudinit"],
                          capture_output=True).returncode == 0


def _require_cloud_init() -> None:
    if not _has_cloud_init():
        pytest.skip(f"cloud-init (Debian package) is not installed for {SYSTEM_PYTHON}: "
                    "`make deps` installs it")


needs_cloud_init = pytest.mark.skipif(
    not _has_cloud_init(), reason="cloud-init (Debian package) is not installed for "
    f"{SYSTEM_PYTHON}: `make deps` installs it")
needs_ignition = pytest.mark.skipif(
    shutil.which("ignition-validate") is None,
    reason="ignition-validate (Debian package ignition) is not installed: `make deps`")


@pytest.fixture(scope="module")
def run_keys(tmp_path_factory) -> tuple[keys.KeyPair, keys.KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    return keys.generate(d, "id_ed25519", "harness-test"), keys.generate(d, "host", "guest")


def intent(run_keys, user: str = "core", extra: dict | str | None = None,
           hostname: str = "seed-test") -> seed.Intent:
    client, host = run_keys
    return seed.Intent(hostname=hostname, user=user, authorized_keys=(client.public,),
                       host_key=host, instance_id="iid-seed-test", extra=extra or {})


def extract_iso(iso_path: Path, dest: Path) -> str:
    """Copy every file out of the ISO by its Rock Ridge name; returns the volume label."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        for root, _dirs, files in iso.walk(rr_path="/"):
            for name in files:
                target = dest / root.lstrip("/") / name
                target.parent.mkdir(parents=True, exist_ok=True)
                iso.get_file_from_iso(str(target), rr_path=f"{root.rstrip('/')}/{name}")
        return iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()


def cloud_init_read(kind: str, iso_path: Path, tmp_path: Path) -> dict:
    files = tmp_path / "iso-files"
    label = extract_iso(iso_path, files)
    out = subprocess.run([SYSTEM_PYTHON, str(READER), kind, str(files), str(tmp_path / "ci")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    result["label"] = label
    return result


def ignition_validate(path: Path) -> str:
    out = subprocess.run(["ignition-validate", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def extra_for(distro: catalog.Distro) -> dict:
    allowed = CAN_TAKE.get(distro.boot.seed, tuple(EXTRA))
    return {k: v for k, v in EXTRA.items() if k in allowed}


def build_for(distro: catalog.Distro, run_keys, dest: Path) -> seed.Media:
    return seed.build(distro.boot.seed, intent(run_keys, distro.boot.ssh_user, extra_for(distro)),
                      dest, distro.boot.seed_options)


CATALOG = catalog.load()


# -- every catalog distro, read back by its format's parser ---------------------


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_distro_gets_media_its_format_reader_accepts(name, run_keys, tmp_path):
    distro = CATALOG[name]
    media = build_for(distro, run_keys, tmp_path / "media")
    fmt = distro.boot.seed
    if fmt in ("nocloud", "ubuntu-core"):
        _check_nocloud(media, tmp_path, extra_for(distro))
    elif fmt in ("config-2", "rancher"):
        _check_config_drive(media, tmp_path, distro.boot.seed_options, fmt)
    elif fmt == "ignition":
        _check_ignition(media, distro.boot.seed_options)
    else:
        assert fmt == "none"
        assert media.disk is None and not media.fw_cfg and media.password_login
        assert not media.host_key_given


def _check_nocloud(media: seed.Media, tmp_path: Path, extra: dict) -> None:
    _require_cloud_init()
    got = cloud_init_read("nocloud", media.disk, tmp_path)
    assert got["found"] and got["label"] == "cidata"
    assert got["instance_id"] == "iid-seed-test" and got["hostname"] == "seed-test"
    assert got["part_types"] == ["text/cloud-config"]
    assert got["schema_error"] == ""
    config = got["config"]
    assert config["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")
    assert media.host_key_given
    if "write_files" in extra:
        paths = [f["path"] for f in config["write_files"]]
        assert "/etc/harness-marker" in paths
        assert "/etc/systemd/system/harness-marker.service" in paths
        assert "touch /var/tmp/harness-ran" in config["runcmd"]
        assert [u["name"] for u in config["users"]][-1] == "alice"


def _check_config_drive(media: seed.Media, tmp_path: Path, options: dict, fmt: str) -> None:
    _require_cloud_init()
    got = cloud_init_read("config-2", media.disk, tmp_path)
    assert got["found"] and got["label"] == "config-2"
    assert got["instance_id"] == "iid-seed-test" and got["hostname"] == "seed-test"
    assert got["public_keys"] and got["public_keys"][0].startswith("ssh-ed25519 ")
    assert got["part_types"] == ["text/cloud-config"]
    config = got["config"]
    if fmt == "rancher":
        assert "rancher" in config and config["ssh_authorized_keys"]
        assert not media.host_key_given
    elif options.get("dialect") == "coreos-cloudinit":
        assert set(config) <= seed.cloudconfig.COREOS_KEYS
        assert "harness-marker.service" in [u["name"] for u in config["coreos"]["units"]]
    else:
        assert got["schema_error"] == ""
        assert config["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")


def _check_ignition(media: seed.Media, options: dict) -> None:
    if shutil.which("ignition-validate") is None:
        pytest.skip("ignition-validate (Debian package ignition) is not installed: `make deps`")
    ((name, path),) = media.fw_cfg
    assert name == options.get("fw_cfg", "opt/com.coreos/config")
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the guest's private host key
    assert "warning" not in ignition_validate(path)
    config = json.loads(path.read_text())
    assert config["ignition"]["version"] == options.get("ignition_spec", "3.3.0")
    assert media.host_key_given


def test_flatcar_and_fedora_coreos_get_their_own_fw_cfg_names():
    for distro in CATALOG.values():
        if distro.boot.seed == "ignition":
            expected = ("opt/org.flatcar-linux/config" if distro.name.startswith("flatcar")
                        else "opt/com.coreos/config")
            assert distro.boot.seed_options.get("fw_cfg", "opt/com.coreos/config") == expected


def test_coreos_config_drives_are_written_for_coreos_cloudinit():
    for distro in CATALOG.values():
        if distro.boot.seed == "config-2" and distro.family == "coreos":
            assert distro.boot.seed_options.get("dialect") == "coreos-cloudinit", distro.name


# -- each format, whether or not the catalog has a distro for it yet ------------


@needs_cloud_init
def test_nocloud_seed_carries_the_extra_configuration(run_keys, tmp_path):
    media = seed.build("nocloud", intent(run_keys, "refos", EXTRA), tmp_path)
    _check_nocloud(media, tmp_path, EXTRA)


@needs_cloud_init
@pytest.mark.parametrize("options", [{}, {"dialect": "coreos-cloudinit"}],
                         ids=["cloud-init", "coreos-cloudinit"])
def test_config_drive_is_read_by_cloud_inits_config_drive_reader(options, run_keys, tmp_path):
    media = seed.build("config-2", intent(run_keys, "core", EXTRA), tmp_path, options)
    _check_config_drive(media, tmp_path, options, "config-2")


def test_coreos_cloudinit_runs_commands_from_a_oneshot_unit(run_keys, tmp_path):
    media = seed.build("config-2", intent(run_keys, "core", EXTRA), tmp_path,
                       {"dialect": "coreos-cloudinit"})
    config = json.loads(media.files["openstack/latest/user_data"].split(b"\n", 1)[1])
    assert "runcmd" not in config
    unit = next(u for u in config["coreos"]["units"] if u["name"] == "harness-runcmd.service")
    assert unit["command"] == "start" and "/etc/harness/runcmd" in unit["content"]
    script = next(f for f in config["write_files"] if f["path"] == "/etc/harness/runcmd")
    assert "touch /var/tmp/harness-ran" in script["content"]


@needs_cloud_init
@pytest.mark.parametrize("route", ["config-2", "cmdline"])
def test_rancher_seed_is_a_config_drive_with_rancher_keys(route, run_keys, tmp_path):
    extra = {"rancher": {"console": "default"}, "runcmd": ["echo hi"]}
    media = seed.build("rancher", intent(run_keys, "rancher", extra), tmp_path, {"route": route})
    _check_config_drive(media, tmp_path, {}, "rancher")
    if route == "cmdline":
        assert "rancher.cloud_init.datasources=[configdrive:/media/config-2]" in media.kernel_args
        assert "rancher.console=default" in media.kernel_args
    else:
        assert media.kernel_args == ""


@needs_ignition
@pytest.mark.parametrize("fw_cfg", seed.ignition.FW_CFG)
@pytest.mark.parametrize("spec", seed.ignition.SPECS)
def test_ignition_config_passes_ignition_validate(spec, fw_cfg, run_keys, tmp_path):
    options = {"ignition_spec": spec, "fw_cfg": fw_cfg}
    media = seed.build("ignition", intent(run_keys, "core", EXTRA), tmp_path, options)
    _check_ignition(media, options)
    units = [u["name"] for u in json.loads(media.files["config.ign"])["systemd"]["units"]]
    assert units == ["harness-marker.service", "harness-runcmd.service"]


@needs_cloud_init
def test_ubuntu_core_gets_a_cidata_seed(run_keys, tmp_path):
    media = seed.build("ubuntu-core", intent(run_keys, "ubuntu", EXTRA), tmp_path)
    _check_nocloud(media, tmp_path, EXTRA)
    assert media.notes


def test_snappy_gets_no_media_and_a_password_login(run_keys, tmp_path):
    media = seed.build("none", intent(run_keys, "ubuntu"), tmp_path)
    assert media.disk is None and media.fw_cfg == () and media.files == {}
    assert media.password_login == ("ubuntu", "ubuntu")
    assert not media.host_key_given


def test_extra_configuration_is_merged_as_data_not_text(run_keys, tmp_path):
    tricky = "line one\n#cloud-config\nkey: [unbalanced\n"
    extra = {"write_files": [{"path": "/etc/tricky", "content": tricky}]}
    media = seed.build("nocloud", intent(run_keys, "refos", extra), tmp_path)
    config = json.loads(media.files["user-data"].split(b"\n", 1)[1])
    assert next(f for f in config["write_files"] if f["path"] == "/etc/tricky")["content"] \
        == tricky


def test_extra_configuration_is_accepted_as_yaml_text(run_keys, tmp_path):
    text = "runcmd:\n  - echo from-yaml\ncloud_config:\n  timezone: UTC\n"
    media = seed.build("nocloud", intent(run_keys, "refos", text), tmp_path)
    config = json.loads(media.files["user-data"].split(b"\n", 1)[1])
    assert config["runcmd"] == ["echo from-yaml"] and config["timezone"] == "UTC"


# -- bad input is refused, naming the field, before any VM ----------------------


def _refused(match: str, fn, *args, **kwargs) -> None:
    with pytest.raises(seed.SeedError, match=match):
        fn(*args, **kwargs)


def test_unparsable_yaml_is_refused(run_keys):
    _refused(r"^extra: not valid YAML", intent, run_keys, "refos", "runcmd: [unclosed\n")


def test_a_key_outside_the_vocabulary_is_refused(run_keys):
    _refused(r"^extra\.bootcmd: unknown key", intent, run_keys, "refos", {"bootcmd": ["x"]})


def test_a_bad_field_inside_an_entry_is_refused_by_its_path(run_keys):
    _refused(r"^extra\.write_files\[0\]\.permissions: '644x'", intent, run_keys, "refos",
             {"write_files": [{"path": "/etc/x", "content": "", "permissions": "644x"}]})
    _refused(r"^extra\.units\[0\]\.name", intent, run_keys, "refos",
             {"units": [{"name": "no-suffix", "content": UNIT}]})
    _refused(r"^extra\.write_files\[0\]\.path", intent, run_keys, "refos",
             {"write_files": [{"path": "relative", "content": ""}]})


@pytest.mark.parametrize(("fmt", "options", "extra", "field"), [
    ("rancher", {}, {"units": EXTRA["units"]}, "extra.units"),
    ("rancher", {}, {"users": EXTRA["users"]}, "extra.users"),
    ("ignition", {}, {"cloud_config": {"timezone": "UTC"}}, "extra.cloud_config"),
    ("nocloud", {}, {"ignition": {"storage": {}}}, "extra.ignition"),
    ("config-2", {"dialect": "coreos-cloudinit"}, {"cloud_config": {"runcmd": ["x"]}},
     "extra.cloud_config.runcmd"),
    ("none", {}, {"runcmd": ["x"]}, "extra.runcmd"),
    ("ignition", {"ignition_spec": "2.3.0"}, {}, "seed option ignition_spec"),
])
def test_a_key_the_format_lacks_is_refused(fmt, options, extra, field, run_keys, tmp_path):
    _refused(f"^{field.replace('.', '[.]')}", seed.build, fmt, intent(run_keys, "core", extra),
             tmp_path, options)
    assert list(tmp_path.iterdir()) == [] or not any(tmp_path.rglob("*.iso"))


def test_a_file_too_large_for_the_medium_is_refused(run_keys, tmp_path):
    big = {"write_files": [{"path": "/var/big", "content": "x" * (seed.LIMITS["iso"] + 1)}]}
    _refused(r"^extra\.write_files\[0\]\.content: .* does not fit the iso medium",
             seed.build, "nocloud", intent(run_keys, "refos", big), tmp_path)
    assert not (tmp_path / "seed.iso").exists()


def test_kernel_arguments_that_do_not_fit_the_command_line_are_refused(run_keys, tmp_path):
    extra = {"rancher": {"environment": {f"K{i}": "v" * 40 for i in range(60)}}}
    _refused(r"^extra\.rancher: \d+ bytes of kernel arguments", seed.build, "rancher",
             intent(run_keys, "rancher", extra), tmp_path, {"route": "cmdline"})


@pytest.mark.parametrize("hostname", ["Bad_Host", "-lead", "x" * 64, "", "a.b"])
def test_a_hostname_that_is_not_one_is_refused(hostname, run_keys):
    _refused(r"^hostname: ", intent, run_keys, "refos", None, hostname)


def test_unknown_seed_option_is_refused(run_keys, tmp_path):
    _refused(r"seed option 'route' does not apply to nocloud", seed.build, "nocloud",
             intent(run_keys, "refos"), tmp_path, {"route": "cmdline"})


# -- `harness seed DISTRO --out DIR` ---------------------------------------------


def test_harness_seed_writes_a_distros_media_for_inspection(tmp_path, capsys):
    from harness import cli

    assert cli.main(["seed", "refos", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "seed.iso").exists()
    assert (tmp_path / "files" / "user-data").read_bytes().startswith(b"#cloud-config\n")
    assert (tmp_path / "keys" / "id_ed25519.pub").exists()
    assert "host key given  True" in capsys.readouterr().out


def test_harness_seed_refuses_bad_extra_configuration(tmp_path):
    from harness import cli

    (tmp_path / "extra.yaml").write_text("units: [{name: x.service}]\n")
    assert cli.main(["seed", "refos", "--out", str(tmp_path / "out"),
                     "--extra", str(tmp_path / "extra.yaml")]) == 2
    assert not (tmp_path / "out" / "seed.iso").exists()


# -- the example extra configurations in seeds/examples ---------------------------

EXAMPLES = sorted((seed.base.SEEDS / "examples").glob("*.yaml"))
# Every way a format is written: as the catalog's distros have it, and with its defaults
# (`harness seed --format F` on a distro of another format).
VARIANTS = sorted({(d.boot.seed, tuple(sorted(d.boot.seed_options.items())))
                   for d in CATALOG.values()} | {(f, ()) for f in seed.FORMATS})


def _declared_formats(example: Path) -> set[str]:
    """The formats an example's first line says it works with, on every distro of them."""
    first = example.read_text().splitlines()[0]
    assert first.startswith("# formats: "), f"{example.name}: first line names its formats"
    return set(first.removeprefix("# formats: ").split())


def _read_back(fmt: str, options: dict, media: seed.Media, tmp_path: Path) -> None:
    """The format's own reader takes the media: cloud-init's datasources (with its
    schema for its own dialect), ignition-validate for Ignition."""
    if fmt == "ignition":
        _check_ignition(media, options)
        return
    _require_cloud_init()
    got = cloud_init_read("nocloud" if fmt in ("nocloud", "ubuntu-core") else "config-2",
                          media.disk, tmp_path)
    assert got["found"] and got["part_types"] == ["text/cloud-config"]
    if fmt in ("nocloud", "ubuntu-core") or options.get("dialect", "cloud-init") == "cloud-init":
        assert got["schema_error"] == ""


def test_there_are_examples_for_each_kind_of_extra_configuration():
    keys = {key for e in EXAMPLES for key in seed.base.parse_extra(e.read_text())}
    assert {"users", "write_files", "runcmd", "units", "cloud_config", "ignition"} <= keys


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_is_taken_by_the_formats_it_names_and_refused_by_the_others(
        example, run_keys, tmp_path):
    declared = _declared_formats(example)
    assert declared <= set(seed.FORMATS)
    refused = set()
    for i, (fmt, options) in enumerate(VARIANTS):
        try:  # the example as `harness seed --extra` reads it: YAML text
            media = seed.build(fmt, intent(run_keys, "core", example.read_text()),
                               tmp_path / f"m{i}", dict(options))
        except seed.SeedError as e:
            assert fmt not in declared, f"{fmt} {options}: {e}"
            refused.add(fmt)
            continue
        if fmt in declared:
            _read_back(fmt, dict(options), media, tmp_path / f"r{i}")
    assert refused == set(seed.FORMATS) - declared  # the first line tells the whole truth


def test_harness_seed_takes_an_example(tmp_path, capsys):
    from harness import cli

    example = seed.base.SEEDS / "examples" / "files-and-commands.yaml"
    assert cli.main(["seed", "refos", "--out", str(tmp_path), "--extra", str(example)]) == 0
    user_data = (tmp_path / "files" / "user-data").read_text()
    assert "/etc/motd.d/harness-example" in user_data and "first-boot" in user_data


def _systemd_verify(name: str, content: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian package systemd) is not installed")
    (tmp_path / name).write_text(content)
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_the_runcmd_unit_is_the_unit_file_in_seeds_and_systemd_takes_it(run_keys, tmp_path):
    text = (seed.base.SEEDS / seed.cloudconfig.RUNCMD_UNIT).read_text()
    config = seed.ignition.config(intent(run_keys, "core", {"runcmd": ["true"]}), "3.3.0")
    (unit,) = [u for u in config["systemd"]["units"] if u["name"] == "harness-runcmd.service"]
    assert unit["contents"] == text
    _systemd_verify(seed.cloudconfig.RUNCMD_UNIT, text, tmp_path)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_the_units_of_each_example_are_taken_by_systemd(example, tmp_path):
    for unit in seed.base.parse_extra(example.read_text()).get("units", []):
        _systemd_verify(unit["name"], unit["content"], tmp_path)
