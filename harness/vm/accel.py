"""Choose KVM or TCG by trying KVM for real.

/dev/kvm can exist and still be useless (on the project's machines a KVM guest
hangs while its kernel decompresses), so the probe boots a real kernel under
`-accel kvm` with no root filesystem and a short deadline: a working KVM reaches
the "cannot mount root" panic in well under a second, a broken one prints
nothing. The answer is kept for the host's boot (keyed by its boot id).
"""

import json
import os
import subprocess
from pathlib import Path

from harness.log import log
from harness.paths import runtime_dir
from harness.vm import timeouts

QEMU = "qemu-system-x86_64"
# TCG's translation-block cache (QEMU's tb-size). QEMU's default is 1 GiB
# (DEFAULT_CODE_GEN_BUFFER_SIZE, accel/tcg/translate-all.c), which a guest's QEMU
# fills and keeps resident. Chosen by measurement on refos (1 GiB RAM, QEMU 7.2, one
# guest at a time, a loaded host; issue 32): QEMU RSS at "ready" 1694 / 1127 / 841 /
# 683 MiB with 1024 / 512 / 256 / 128; QEMU CPU to the first command, interleaved
# boots, 51.7 and 47.9 s with 256 against 55.5 and 47.5 with 1024 (57.0 and 57.5 with
# 512); 128 cost more (105 s against 92 s to "ready": more flushes, more translating
# again). A smaller cache
# also makes resets cheaper: the firmware, after a guest's reset, rewrites pages that
# still hold code translated in the boot before, and every write there invalidates
# translations (firmware to kernel 68 / 34 / 9 s after a reset with 1024 / 512 / 256).
TB_CACHE_MIB = 256
# What a guest's QEMU holds beyond its RAM and TCG cache: its own heap, libraries and
# device state. Measured 49 MiB on refos from /proc/PID/smaps (RSS less the guest RAM
# and TCG cache mappings), rounded up.
QEMU_OVERHEAD_MIB = 64
REACHED = ("Kernel panic", "VFS: Unable to mount root")
_warned = False  # the fallback is said once per process


class AccelError(RuntimeError):
    pass


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def probe_kvm(kernel: Path) -> tuple[bool, str]:
    """Boot `kernel` under KVM with a deadline; (works, why)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    deadline = timeouts.get("probe")
    cmd = [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none",
           "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
           "-append", "console=ttyS0 panic=-1 loglevel=4"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline,
                             errors="replace")
        text = out.stdout + out.stderr
    except subprocess.TimeoutExpired:
        return False, f"a KVM guest kernel did not reach its root mount within {deadline:.0f}s"
    if any(marker in text for marker in REACHED):
        return True, "a KVM guest kernel booted"
    last = text.strip().splitlines()[-1:] or ["no output"]
    return False, f"KVM guest failed: {last[0][:200]}"


def choose(requested: str, kernel: Path | None, require_kvm: bool = False) -> str:
    """Resolve --accel=auto|kvm|tcg into kvm or tcg, warning once on fallback."""
    if requested not in ("auto", "kvm", "tcg"):
        raise AccelError(f"--accel={requested}: expected auto, kvm or tcg")
    if requested == "tcg" and require_kvm:
        raise AccelError("--require-kvm contradicts --accel=tcg")
    if requested == "tcg":
        return _use("tcg")
    works, why = _cached_probe(kernel)
    if works:
        return _use("kvm")
    if requested == "kvm" or require_kvm:
        raise AccelError(f"KVM was required but does not work here: {why}")
    global _warned
    if _warned:
        return _use("tcg")
    _warned = True
    log.warning("accel: KVM does not work here (%s); falling back to TCG, software "
                "emulation: boots take minutes and every timeout is scaled x%d",
                why, timeouts.TCG_FACTOR)
    return _use("tcg")


def _use(accel: str) -> str:
    timeouts.set_accel(accel)
    return accel


def tb_cache_mib(accel: str) -> int:
    """The tb-size to give QEMU: TB_CACHE_MIB under TCG, 0 (none: KVM has no such
    cache) otherwise."""
    return 0 if accel == "kvm" else TB_CACHE_MIB


def guest_cost_mib(memory_mib: int, accel: str) -> int:
    """Host memory one guest really takes: its RAM, its TCG cache and QEMU's own
    overhead. `accel` may still be "auto" (not probed yet): it counts as TCG, the
    dearer of the two, so a budget made before the probe never over-commits."""
    return memory_mib + tb_cache_mib(accel) + QEMU_OVERHEAD_MIB


def _cached_probe(kernel: Path | None) -> tuple[bool, str]:
    cache = runtime_dir() / "kvm-probe.json"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("boot_id") == _boot_id():
            return saved["works"], saved["why"] + " (probed earlier this host boot)"
    except (OSError, ValueError, KeyError):
        pass
    if kernel is None:
        works, why = False, "no guest kernel to probe with"
    else:
        works, why = probe_kvm(kernel)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": _boot_id(), "works": works, "why": why}))
    return works, why
