"""KVM is probed for real, and the fallback to TCG is said once."""

import logging

import pytest

from harness.images import build
from harness.vm import accel, timeouts


@pytest.fixture
def kernel():
    built = build.artifacts()
    if not built.kernel.exists():
        pytest.skip("refos is not built yet (make image): no kernel to probe KVM with")
    return built.kernel


def test_auto_takes_what_the_real_probe_finds_and_says_the_fallback_once(
        kernel, caplog, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_RUNTIME", str(tmp_path))  # no cached probe: probe now
    monkeypatch.setattr(accel, "_warned", False)
    works, _why = accel.probe_kvm(kernel)
    with caplog.at_level(logging.WARNING, logger="harness"):
        first = accel.choose("auto", kernel)
        second = accel.choose("auto", kernel)
    assert first == second == ("kvm" if works else "tcg")
    fallbacks = [r for r in caplog.records if "falling back to TCG" in r.message]
    assert len(fallbacks) == (0 if works else 1)


def test_tcg_scales_every_timeout():
    accel.choose("tcg", None)
    assert timeouts.get("boot") == timeouts.BASE["boot"] * timeouts.TCG_FACTOR


def test_require_kvm_without_kvm_is_an_error_not_a_fallback(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RUNTIME", str(tmp_path))
    works, _why = accel.probe_kvm(kernel)
    if works:
        pytest.skip("KVM works on this machine: nothing to refuse")
    with pytest.raises(accel.AccelError, match="KVM was required"):
        accel.choose("auto", kernel, require_kvm=True)


def test_a_guest_costs_its_ram_plus_tcg_cache_plus_qemu_overhead():
    ram = 1024
    tcg = accel.guest_cost_mib(ram, "tcg")
    assert tcg == ram + accel.TB_CACHE_MIB + accel.QEMU_OVERHEAD_MIB
    assert accel.guest_cost_mib(ram, "kvm") == ram + accel.QEMU_OVERHEAD_MIB
    assert accel.guest_cost_mib(ram, "auto") == tcg  # not probed yet: the dearer one
    assert accel.tb_cache_mib("kvm") == 0 and accel.tb_cache_mib("tcg") == accel.TB_CACHE_MIB
