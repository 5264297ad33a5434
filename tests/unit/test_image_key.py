"""What names a built image and a machine: the image recipe's files and the code that
shapes them, not a version string (harness.images.build.recipe_hash, MachineSpec.key)."""

from pathlib import Path
from types import SimpleNamespace

from harness import catalog
from harness.images import build
from harness.vm.machine import MachineSpec


def test_the_builder_modules_are_the_builder_and_what_it_imports():
    names = {p.name for p in build.builder_modules()}
    assert {"build.py", "ostree.py", "snap.py"} <= names
    assert not names & {"fetch.py", "convert.py", "streams.py", "__init__.py"}


def test_a_step_moved_into_a_module_of_its_own_is_in_the_recipe_hash(tmp_path: Path):
    (tmp_path / "build.py").write_text("def disk():\n    from harness.images import gpt\n")
    (tmp_path / "gpt.py").write_text("import harness.images.esp\n")
    (tmp_path / "esp.py").write_text("from harness.images.gpt import x\n")  # a cycle
    (tmp_path / "fetch.py").write_text("from harness.images import build\n")  # imports us
    found = build.builder_modules(tmp_path / "build.py")
    assert [p.name for p in found] == ["build.py", "esp.py", "gpt.py"]


def test_a_machine_key_names_what_the_guest_is_made_of_and_nothing_else():
    refos = catalog.get("refos")
    key = MachineSpec(refos, SimpleNamespace(key="img-1")).key()
    assert MachineSpec(refos, SimpleNamespace(key="img-1")).key() == key
    assert MachineSpec(refos, SimpleNamespace(key="img-2")).key() != key
    marked = MachineSpec(refos, SimpleNamespace(key="img-1"), extra_config="runcmd: [true]")
    assert marked.key() != key
