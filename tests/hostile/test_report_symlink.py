"""Files the harness writes into an artifacts folder (issue 31, lows): a symlink
planted at report.html's name (or image.json's, status.json's) is replaced, and the
file it points at is never written."""

from harness import cli, paths


def test_report_html_symlink_is_replaced_not_written_through(tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (artifacts / "report.html").symlink_to(victim)
    (artifacts / "report.md").symlink_to(victim)
    assert cli.main(["report", str(artifacts)]) == 0
    assert victim.read_text() == "keep me"
    for name in ("report.html", "report.md"):
        assert not (artifacts / name).is_symlink() and (artifacts / name).stat().st_size > 0


def test_replace_file_leaves_no_temporary_behind(tmp_path):
    paths.replace_file(tmp_path / "a.json", "{}\n")
    paths.replace_file(tmp_path / "a.json", "[]\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "[]\n"


def _planted(folder, victim, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(victim)


def test_evidence_files_replace_planted_symlinks(tmp_path):
    """A machine's console log, domain XML and seed files copied into the evidence
    folder (a stand-in machine: only its files and timings are read)."""
    from types import SimpleNamespace

    from harness.plugin import evidence

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "console.log").write_text("console")
    (run_dir / "domain.xml").write_text("<domain/>")
    machine = SimpleNamespace(name="m", dir=run_dir, timings={}, boot_timings={}, template=None,
                              restarts=0, power_cycles=0,
                              host_key=None, res=SimpleNamespace(domain=None),
                              seed=SimpleNamespace(files={"user-data": b"#cloud-config\n"}))
    dest = tmp_path / "evidence"
    _planted(dest, victim, "console.log", "domain.xml")
    _planted(dest / "seed", victim, "user-data")
    evidence.save(machine, dest, journal=False)
    assert victim.read_text() == "keep me"
    assert (dest / "console.log").read_text() == "console"
    assert (dest / "seed" / "user-data").read_bytes() == b"#cloud-config\n"


def test_matrix_json_replaces_a_planted_symlink(tmp_path):
    from harness import matrix

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    artifacts = tmp_path / "artifacts"
    _planted(artifacts, victim, "matrix.json")
    matrix.run([], matrix.MatrixOptions(artifacts, ["qemu:///system"], []), {})
    assert victim.read_text() == "keep me"
    assert not (artifacts / "matrix.json").is_symlink()
