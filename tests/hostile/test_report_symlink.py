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
