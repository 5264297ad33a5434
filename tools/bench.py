"""`make bench`: what the harness costs, measured side by side in one run.

Every figure is a ratio against a baseline measured in the same run on the
same machine: the harness's boot against bare QEMU polled with the ssh
client (pairs of boots, alternating; the median ratio and its spread), a
restore against a cold boot, two VMs at once against one after the
other, the suites' wall time against the guest's own boot time, fetch against
curl. Targets are printed next to the figures; nothing here fails on a miss.
"""

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import libvirt

from harness import catalog, seed, settings, signals
from harness.log import log, setup_cli_logging
from harness.paths import REPO
from harness.seed import keys
from harness.signals import unwind_on_sigterm, wait_interruptibly
from harness.vm import accel, runs, snapshot, storage, timeouts
from harness.vm.accel import tb_cache_mib
from harness.vm.domain import NIC_SLOT, OVMF_CODE, OVMF_VARS, netdev_arg
from harness.vm.machine import Machine, MachineSpec
from harness.vm.session import Options, Session

OUT = REPO / "artifacts" / "bench"
BOOT_PAIRS = 3  # harness and bare boots, alternating: the median of the pairs' ratios
# QEMU's own TCG cache size (DEFAULT_CODE_GEN_BUFFER_SIZE, accel/tcg/translate-all.c)
DEFAULT_TB_CACHE_MIB = 1024


def harness_boot(session: Session, spec: MachineSpec, name: str = "bench-cold"
                 ) -> tuple[Machine, dict]:
    """Cold boot through the harness; the machine stays up for the next figures."""
    started = time.monotonic()
    m = session.new_machine(name, spec).start()
    provision = m.started - started
    cpu = _qemu_cpu_s(m)  # before the journal is read: the boot's own work
    login = _login_times(m)
    return m, {
        # QEMU's CPU seconds until then (the first command; "boot finished" for the
        # pairs' kept boot): on a loaded host the boot's cost, which its wall time is
        # not (a competing process stretches wall time only)
        "qemu_cpu_s": cpu,
        "to_first_command_s": round(provision + m.timings["command"], 1),
        "to_ready_s": round(provision + m.timings["ready"], 1),
        "lag_after_sshd_listening_s": _since(login, "listening"),
        "lag_after_logins_permitted_s": _since(login, "permitted"),
        # Where the harness's time goes: making disks, seed and domain, then each
        # readiness phase (seconds from domain start).
        "phases_s": {"provision": round(provision, 2),
                     **{k: v for k, v in m.timings.items() if k != "ready"}},
    }


def boot_pairs(session: Session, spec: MachineSpec, pairs: int) -> tuple[Machine, dict]:
    """Harness and bare QEMU boots to the first command, alternating in one run:
    harness, bare, harness, bare, ...

    The last harness boot goes on to "boot finished" and is kept for the next
    figures, paused while the last bare boot runs so that it takes no CPU from it;
    the others stop at the first command (the catalog's ready commands are left
    out: they come after what is measured)."""
    quick = _quick(spec)
    done: list[dict] = []
    kept = None
    for i in range(1, pairs + 1):
        last = i == pairs
        m, harness = harness_boot(session, spec if last else quick, f"bench-boot{i}")
        beside = domain_cgroup_parent(m)
        if last:
            kept = m
            m.res.domain.suspend()
        else:
            m.destroy()
        bare = bare_boot(spec.distro, spec.image, OUT / f"bare{i}", session.accel, beside)
        bare["cgroup"] = str(beside or "")
        ratio = round(harness["to_first_command_s"] / bare["to_first_command_s"], 3)
        log.info("bench: pair %d: harness %.1fs, bare %.1fs, ratio %.3f", i,
                 harness["to_first_command_s"], bare["to_first_command_s"], ratio)
        done.append({"harness": harness, "bare": bare, "ratio": ratio})
    kept.res.domain.resume()
    return kept, _pair_summary(done)


def _pair_summary(pairs: list[dict]) -> dict:
    """Median and spread of the pairs' ratios, with the medians behind them."""
    ratios = [p["ratio"] for p in pairs]
    harness = [p["harness"]["to_first_command_s"] for p in pairs]
    bare = [p["bare"]["to_first_command_s"] for p in pairs]
    lags = _found(p["harness"]["lag_after_logins_permitted_s"] for p in pairs)
    listening = _found(p["harness"]["lag_after_sshd_listening_s"] for p in pairs)
    phases = [p["harness"]["phases_s"] for p in pairs]
    return {
        "pairs": pairs,
        "median_ratio": round(statistics.median(ratios), 3),
        "spread": f"{min(ratios):.2f}-{max(ratios):.2f}",
        "harness_median_s": round(statistics.median(harness), 1),
        "bare_median_s": round(statistics.median(bare), 1),
        "medians": f"{statistics.median(harness):.0f} / {statistics.median(bare):.0f}",
        "login_lag_median_s": round(statistics.median(lags), 2) if lags else None,
        "login_lag_spread": f"{min(lags):.2f}-{max(lags):.2f}" if lags else None,
        "listening_lag_median_s": round(statistics.median(listening), 2) if listening
        else None,
        "phases_median_s": {k: round(statistics.median(p[k] for p in phases), 2)
                            for k in phases[0]},
    }


def _found(values) -> list[float]:
    return [v for v in values if v is not None]


def _login_times(m: Machine) -> dict[str, float]:
    """Guest-clock seconds at which sshd began listening, the guest began letting
    users in, and sshd first accepted the harness; a stamp not found is left out.

    Until systemd-user-sessions.service has removed /run/nologin, pam_nologin(8)
    refuses every user but root, and sshd logs "Access denied for user ... by PAM
    account configuration"; sshd may listen before that. Every stamp is journald's
    monotonic one (__MONOTONIC_TIMESTAMP, systemd.journal-fields(7)): systemd's own
    messages carry no sender's stamp, and one clock for all keeps journald's
    lateness on a busy vCPU from favouring either side. `sshd-session` too: OpenSSH
    9.8 split that program off sshd, and its lines may carry its name (not verified
    here; Debian 12 has OpenSSH 9.2)."""
    out = m.succeed("journalctl -b -o json --no-pager -t sshd -t sshd-session; "
                    "journalctl -b -o json --no-pager -u systemd-user-sessions.service")
    times: dict[str, float] = {}
    for line in out.splitlines():
        entry = json.loads(line)
        stamp = int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        message = str(entry.get("MESSAGE", ""))
        if "Server listening on" in message:
            times.setdefault("listening", stamp)
        elif "Accepted publickey" in message:
            times.setdefault("accepted", stamp)
        elif entry.get("JOB_TYPE") == "start" and entry.get("JOB_RESULT") == "done":
            times.setdefault("permitted", stamp)
    if "listening" in times:
        permitted = 0.0 if m.distro.boot.ssh_user == "root" else times.get("permitted", 0.0)
        times["permitted"] = max(times["listening"], permitted)  # pam_nologin lets root in
    return times


def _since(times: dict[str, float], start: str) -> float | None:
    """Seconds from `start` to sshd accepting the harness; None without either stamp."""
    if start not in times or "accepted" not in times:
        return None
    return round(times["accepted"] - times[start], 2)


def bare_boot(distro, image, work: Path, accel_name: str,
              beside: Path | None = None) -> dict:
    """The same disk, seed and QEMU options (TCG's cache size too) without libvirt or
    the harness,
    polled with the ssh client every 0.2 s, each try as patient as the harness's
    banner probe (a shorter one gives up on an sshd that is starting its process).
    QEMU runs in a CPU cgroup made in `beside`, where libvirt puts its domains."""
    work.mkdir(parents=True)
    client = keys.generate(work, "id", "bench")
    # The host keys the harness's seed gives too: without them the guest makes its
    # own at boot (harness.seed.keys), and the baseline would measure that.
    intent = seed.Intent(hostname="bench-bare", user=distro.boot.ssh_user,
                         authorized_keys=(client.public,),
                         host_key=keys.generate(work, "ssh_host_ed25519_key", "bench"),
                         spare_host_keys=keys.spare_host_keys(work, "bench"))
    media = seed.build(distro.boot.seed, intent, work)
    overlay, vars_fd = work / "disk.qcow2", work / "VARS.fd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.path), "-F",
                    "qcow2", str(overlay)], check=True)
    shutil.copy(OVMF_VARS, vars_fd)
    port_lock = runs.PortLock()
    port = port_lock.port
    tcg = f"tcg,tb-size={tb_cache_mib(accel_name)}" if tb_cache_mib(accel_name) else "tcg"
    cmd = ["qemu-system-x86_64", "-machine", "pc", "-accel",
           tcg if accel_name == "tcg" else accel_name, "-m",
           str(distro.boot.memory_mib), "-nodefaults", "-display", "none",
           "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
           "-drive", f"if=pflash,format=raw,file={vars_fd}",
           "-drive", f"file={overlay},if=virtio,format=qcow2",
           "-drive", f"file={media.disk},if=virtio,format=raw,readonly=on",
           "-device", "virtio-rng-pci", "-serial", f"file:{work / 'console.log'}",
           "-netdev", netdev_arg(port),
           "-device", f"virtio-net-pci,netdev=hn0,addr={NIC_SLOT}"]
    patience = f"ConnectTimeout={timeouts.get('banner'):.0f}"
    ssh = ["ssh", "-q", "-o", "BatchMode=yes", "-o", patience, "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-i", str(client.private_path), "-p",
           str(port), f"{distro.boot.ssh_user}@127.0.0.1", "true"]
    started = time.monotonic()
    qemu = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    group = _join_cgroup(beside, qemu.pid) if beside else None
    try:
        while subprocess.run(ssh, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             timeout=60).returncode != 0:
            if qemu.poll() is not None or time.monotonic() - started > 900:
                raise RuntimeError(f"bare QEMU did not answer ssh; see {work / 'console.log'}")
            time.sleep(0.2)
        return {"to_first_command_s": round(time.monotonic() - started, 1)}
    finally:
        signals.stop([qemu])
        port_lock.release()
        if group:
            group.rmdir()


def domain_cgroup_parent(m: Machine) -> Path | None:
    """The CPU cgroup folder under which libvirt put the machine's QEMU (its
    partition: `machine`, or `machine.slice` under systemd), or None.

    The CPU scheduler shares a loaded host between that one folder, holding every
    libvirt domain on the host, and each process outside it: bare QEMU started
    from a shell would get a whole share of its own, and the ratio would measure
    that, not the harness. Measured here under load: libvirt's QEMU 55 to 72 % of
    a core, bare QEMU beside it 77 to 96 %."""
    try:
        pid = Path(f"/run/libvirt/qemu/{m.res.domain.name()}.pid").read_text().strip()
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        root = {"cpu": "/sys/fs/cgroup/cpu", "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "": "/sys/fs/cgroup"}.get(controllers)
        top = path.strip("/").split("/")[0]
        if root and top and (Path(root) / top).is_dir():
            return Path(root) / top
    return None


def _join_cgroup(parent: Path, pid: int) -> Path | None:
    """Move `pid` into a new cgroup of its own in `parent`; None (logged) if refused."""
    group = parent / f"bench-bare-{pid}"
    try:
        group.mkdir()
        (group / "cgroup.procs").write_text(f"{pid}\n")
    except OSError as e:
        log.warning("bench: bare QEMU stays in the bench's own cgroup (%s): %s", group, e)
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def restore_vs_cold(session: Session, m: Machine, cold_ready_s: float) -> dict:
    """Save the cold-booted machine, then time a fresh machine from the save."""
    templates = snapshot.Templates(m.conn)
    key = m.spec.key()
    fresh = session.new_machine("bench-fresh", m.spec)
    started = time.monotonic()
    templates.restore(key, lambda: m, fresh)
    save_s = templates.saves[key].seconds
    fresh_s = time.monotonic() - started - save_s
    fresh.succeed("true")
    templates.close()
    return {"save_s": save_s, "fresh_machine_s": round(fresh_s, 1),
            "cold_boot_to_ready_s": cold_ready_s, "ratio": round(fresh_s / cold_ready_s, 3)}


def reboot_vs_cold(session: Session, spec: MachineSpec, m: Machine, times: int = 3) -> dict:
    """Reboots of the kept machine against cold boots of the same image, alternating
    (reboot, cold, reboot, ...) so that a change in the host's load falls on both
    alike, each to the first command of the new boot (median of `times`; the
    catalog's ready commands follow both and are left out); the kept machine is
    paused during the cold boots. A reboot is split at the guest's reset, when the
    harness starts a new QEMU process: before it the guest's shutdown, after it the
    boot. Power cycles the watchdog made are counted: a reboot that needed one is
    not cheap, whatever its time."""
    took: list[float] = []
    shutdown: list[float] = []
    cold: list[float] = []
    answered: list[float] = []  # when each new boot first answered (reboot's settle)
    for i in range(1, times + 1):
        started = time.monotonic()
        m.reboot(settle=lambda: answered.append(time.monotonic()) or True)
        took.append(round(answered[-1] - started, 1))
        shutdown.append(round(m.restarted_at - started, 1) if m.restarted_at > started
                        else None)
        m.res.domain.suspend()
        try:
            c, h = harness_boot(session, _quick(spec), f"bench-cold{i}")
            c.destroy()
        finally:
            m.res.domain.resume()
        cold.append(h["to_first_command_s"])
        log.info("bench: reboot %d: %.1fs (shutdown %s s), cold boot %.1fs", i, took[-1],
                 shutdown[-1], cold[-1])
    reboot, cold_median = statistics.median(took), statistics.median(cold)
    split = [s for s in shutdown if s is not None]
    return {"reboots_s": took, "shutdown_s": shutdown, "cold_boots_s": cold,
            "shutdown_median_s": statistics.median(split) if split else None,
            "medians": f"{reboot:.0f} / {cold_median:.0f}",
            "ratio": round(reboot / cold_median, 3),
            "new_processes": m.restarts, "power_cycles": m.power_cycles}


def _quick(spec: MachineSpec) -> MachineSpec:
    """`spec` without the catalog's ready commands: boots measured to the first
    command, which those commands follow."""
    return replace(spec, distro=replace(spec.distro, boot=replace(spec.distro.boot, ready=())))


def tb_cache_vs_default(session: Session, spec: MachineSpec, kept: Machine,
                        pairs: int = 3) -> dict:
    """Boots to the first command with the chosen TCG cache and with QEMU's default
    (1 GiB), alternating (chosen, default, chosen, ...) so that a change in the host's
    load falls on both alike; the kept machine is paused meanwhile. The smaller cache
    must not cost boot time. Each boot's QEMU CPU and peak RSS are kept beside it."""
    if session.accel != "tcg":
        return {}
    quick = _quick(spec)
    chosen = accel.TB_CACHE_MIB
    runs: dict[int, dict[str, list]] = {size: {"s": [], "cpu": [], "rss": []}
                                        for size in (chosen, DEFAULT_TB_CACHE_MIB)}
    kept.res.domain.suspend()
    try:
        for i in range(1, pairs + 1):
            for size, got in runs.items():
                accel.TB_CACHE_MIB = size  # read when the domain XML is made
                m, h = harness_boot(session, quick, f"bench-tb{size}-{i}")
                got["s"].append(h["to_first_command_s"])
                got["cpu"].append(h["qemu_cpu_s"])
                got["rss"].append(_qemu_peak_rss_mib(m))
                m.destroy()
    finally:
        accel.TB_CACHE_MIB = chosen
        kept.res.domain.resume()
    mine, theirs = runs[chosen], runs[DEFAULT_TB_CACHE_MIB]
    out = {"chosen_mib": chosen, "default_mib": DEFAULT_TB_CACHE_MIB, "runs": runs,
           "medians": f"{statistics.median(mine['s']):.0f} / "
                      f"{statistics.median(theirs['s']):.0f}",
           "ratio": round(statistics.median(mine["s"]) / statistics.median(theirs["s"]), 3)}
    if None not in (*mine["cpu"], *theirs["cpu"]):
        cpu = statistics.median(mine["cpu"]), statistics.median(theirs["cpu"])
        out["cpu_medians"] = f"{cpu[0]:.0f} / {cpu[1]:.0f}"
        out["cpu_ratio"] = round(cpu[0] / cpu[1], 3)
    return out


def warm_vs_cold(distro) -> dict:
    """A session's first usable machine on a cold cache against a warm one (the save
    the first session kept), each timed from the session's start. A spec of this
    bench run's own makes the first one cold without touching other saves; its save
    is removed at the end."""
    marker = {"write_files": [{"path": "/etc/harness-bench", "content": f"{time.time()}\n"}]}
    out: dict = {}
    for mode in ("cold", "warm"):
        started = time.monotonic()
        with Session(Options(artifacts=OUT / f"start-{mode}")) as session:
            spec = session.spec(distro, extra_config=marker)
            try:
                session.machine(f"bench-{mode}", spec).succeed("true")
            except BaseException:  # the save, if made, goes with the session
                session.templates.throw_away(spec.key())
                raise
            out[f"{mode}_start_s"] = round(time.monotonic() - started, 1)
            if mode == "warm":
                session.templates.throw_away(spec.key())
    out["ratio"] = round(out["warm_start_s"] / out["cold_start_s"], 3)
    return out


def two_at_once(session: Session, spec: MachineSpec, one_s: float) -> dict:
    """Two cold boots (to boot finished) in parallel against twice one boot."""
    results: dict[str, float] = {}

    def boot(name: str) -> None:
        m = session.new_machine(name, spec)
        t = time.monotonic()
        try:
            m.start()
            results[name] = time.monotonic() - t
        finally:
            m.destroy()

    started = time.monotonic()
    threads = [threading.Thread(target=boot, args=(f"bench-par{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    join_or_stop(session, threads, [f"bench-par{i}" for i in (1, 2)])
    wall = time.monotonic() - started
    return {"parallel_wall_s": round(wall, 1), "sequential_s": round(2 * one_s, 1),
            "ratio": round(wall / (2 * one_s), 2), "each_s": {k: round(v, 1) for k, v in
                                                              results.items()}}


def join_or_stop(session: Session, threads: list[threading.Thread], names: list[str]) -> None:
    """Join boot threads. On SIGTERM (KeyboardInterrupt here) stop their machines first,
    so each thread ends in seconds and none creates a domain after the session's
    cleanup: a thread left running would boot on after the run was swept."""
    try:
        wait_interruptibly(lambda: not any(t.is_alive() for t in threads))
    except BaseException:
        started = time.monotonic()
        log.warning("bench: interrupted; stopping %s", ", ".join(names))
        while any(t.is_alive() for t in threads):  # a thread may create after a destroy
            for m in session.machines:
                if m.name in names:
                    m.destroy()
            for t in threads:
                t.join(timeout=1)
        log.warning("bench: stopped %s in %.1fs", ", ".join(names), time.monotonic() - started)
        raise


def suites(distro_name: str) -> dict:
    """Wall time of a suite subset with restores (the default) and with cold boots,
    against the guest boot time inside each run."""
    out = {}
    for mode, extra in (("restores", []), ("cold_boots", ["--cold-boots"])):
        artifacts = OUT / f"suite-{mode}"
        shutil.rmtree(artifacts, ignore_errors=True)
        started = time.monotonic()
        status = signals.run_child(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--distro={distro_name}", f"--artifacts={artifacts}", "--offline", *extra,
             *(str(REPO / "tests/suites" / f) for f in ("test_docker.py", "test_readonly.py"))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        boots = _boot_seconds(artifacts)
        out[mode] = {"wall_s": round(wall, 1), "guest_boot_s": round(boots, 1),
                     "wall_over_boot": round(wall / boots, 2) if boots else None,
                     "pytest_status": status}
    out["restores_over_cold"] = round(out["restores"]["wall_s"] / out["cold_boots"]["wall_s"], 2)
    return out


def _boot_seconds(artifacts: Path) -> float:
    """Cold boots to ready plus reboots, from each machine's timings."""
    total = 0.0
    for path in artifacts.glob("*/*/timings.json"):
        timings = json.loads(path.read_text())
        if "restore" not in timings:
            total += timings.get("ready", 0)
        total += sum(v for k, v in timings.items() if k.startswith("reboot"))
    return total


def disk_provisioning(conn: libvirt.virConnect, work: Path, run: runs.Run) -> dict:
    """Upload a sparse base image and make an overlay over it: 1 GiB against 20 GiB."""
    out = {}
    try:
        for gib in (1, 20):
            base = work / f"sparse-{gib}g.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), f"{gib}G"],
                           check=True)
            key = f"bench-{run.id}-{gib}g"
            started = time.monotonic()
            path, vsize = storage.base_volume(conn, base, key)
            storage.overlay(conn, f"{run.volume_prefix()}bench-{gib}g.disk.qcow2", path, vsize)
            out[f"{gib}_gib_s"] = round(time.monotonic() - started, 3)
    finally:  # base volumes are not the run's by name: no sweep would take these
        storage.delete_volumes(conn, f"{run.volume_prefix()}bench-")
        storage.delete_volumes(conn, f"base-bench-{run.id}-")
    out["ratio_20_over_1"] = round(out["20_gib_s"] / out["1_gib_s"], 2)
    return out


def fetch_figures() -> dict:
    from harness.images import fetch
    from tools import fetchbench
    from tools.localserver import LocalServer

    out = fetchbench.compare_with_curl(256, 10)
    with LocalServer() as server:
        data = OUT / "refetch.raw"
        data.write_bytes(os.urandom(64 * 2**20))
        source = fetch.Source((server.add("/r", data),), fetch.file_digest(data))
        cache = OUT / "refetch-cache"
        fetch.fetch(source, cache=cache, label="bench")
        started = time.monotonic()
        fetch.fetch(source, cache=cache, label="bench")
        out["cached_refetch_s"] = round(time.monotonic() - started, 3)
        shutil.rmtree(cache)
        data.unlink()
    return out


def _qemu_proc(m: Machine, name: str) -> str | None:
    """/proc/<pid>/<name> of the machine's QEMU process; None once it is gone."""
    pidfile = Path(f"/run/libvirt/qemu/{m.res.domain.name()}.pid")
    try:
        return Path(f"/proc/{pidfile.read_text().strip()}/{name}").read_text()
    except OSError:
        return None


def _qemu_cpu_s(m: Machine) -> float | None:
    """User + system CPU seconds of the machine's QEMU process (proc(5), stat)."""
    if (stat := _qemu_proc(m, "stat")) is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def _qemu_peak_rss_mib(m: Machine) -> float | None:
    if (status := _qemu_proc(m, "status")) is None:
        return None
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return round(kib / 1024, 1)


FIGURES = ("boot", "reboot", "tb_cache", "restore", "two_vms", "warm", "disk", "fetch",
           "suites")


def main(argv: list[str] | None = None) -> int:
    """All figures, or those named on the command line (FIGURES; boot always runs)."""
    wanted = set(argv if argv is not None else sys.argv[1:]) or set(FIGURES)
    if unknown := wanted - set(FIGURES):
        print(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(FIGURES)}", file=sys.stderr)
        return 2
    setup_cli_logging()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    distro = catalog.get(settings.get("HARNESS_BENCH_DISTRO"))
    started = time.monotonic()
    # SIGTERM unwinds, so the session removes every domain and volume it made.
    with unwind_on_sigterm(), Session(Options(saves=False, artifacts=OUT)) as session:
        spec = session.spec(distro)
        result: dict = {"machine": {"cores": os.cpu_count(), "accel": session.accel,
                                    "python": platform.python_version(),
                                    "distro": distro.name}}
        m, result["boot"] = boot_pairs(session, spec, BOOT_PAIRS)
        h = result["boot"]["pairs"][-1]["harness"]
        if "reboot" in wanted:
            result["reboot"] = reboot_vs_cold(session, spec, m)
        rss = _qemu_peak_rss_mib(m)
        result["memory"] = {"qemu_peak_rss_mib": rss, "guest_ram_mib": distro.boot.memory_mib,
                            "rss_over_ram": round(rss / distro.boot.memory_mib, 3)
                            if rss else None}
        if "tb_cache" in wanted:
            result["tb_cache"] = tb_cache_vs_default(session, spec, m)
        if "restore" in wanted:
            result["fresh_from_save"] = restore_vs_cold(session, m, h["to_ready_s"])
        if "two_vms" in wanted:
            result["two_vms"] = two_at_once(session, spec, h["to_ready_s"])
        if "warm" in wanted:
            result["warm_start"] = warm_vs_cold(distro)
        if "disk" in wanted:
            result["disk"] = disk_provisioning(session.conn, OUT, session.run)
        if "fetch" in wanted:
            result["fetch"] = fetch_figures()
        if "suites" in wanted:
            result["suites"] = suites(distro.name)
        result["memory"]["harness_peak_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    (OUT / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(phases_line(result))
    print(f"\nwritten: {OUT / 'bench.json'}")
    return 0


TARGETS = [
    ("boot to first command, harness / bare QEMU", "boot.median_ratio", "<= 1.05", 1.05,
     "le"),
    ("  spread of the pairs' ratios", "boot.spread", "", None, ""),
    ("  median boot, harness / bare (s)", "boot.medians", "", None, ""),
    ("harness lag after the guest permits logins (s)", "boot.login_lag_median_s", "< 1",
     1.0, "lt"),
    ("  spread of the lag (s)", "boot.login_lag_spread", "", None, ""),
    ("  lag after sshd listens (s)", "boot.listening_lag_median_s", "", None, ""),
    ("reboot / cold boot, to first command", "reboot.ratio", "<= 1.0", 1.0, "le"),
    ("  median reboot / cold boot (s)", "reboot.medians", "", None, ""),
    ("  median shutdown, up to the guest's reset (s)", "reboot.shutdown_median_s", "", None,
     ""),
    ("  new QEMU processes in the reboots", "reboot.new_processes", "", None, ""),
    ("  power cycles in the reboots", "reboot.power_cycles", "0", 0, "le"),
    ("QEMU peak RSS / guest RAM", "memory.rss_over_ram", "<= 1.3", 1.3, "le"),
    ("boot, chosen TCG cache / QEMU's default", "tb_cache.ratio", "<= 1.05", 1.05, "le"),
    ("  median boot, chosen / default (s)", "tb_cache.medians", "", None, ""),
    ("  QEMU CPU to first command, chosen / default", "tb_cache.cpu_ratio", "", None, ""),
    ("  median QEMU CPU, chosen / default (s)", "tb_cache.cpu_medians", "", None, ""),
    ("fresh machine from save / cold boot", "fresh_from_save.ratio", "<= 0.1", 0.1, "le"),
    ("two VMs at once / one after the other", "two_vms.ratio", "", None, ""),
    ("warm start / cold start (new session)", "warm_start.ratio", "", None, ""),
    ("warm start, session to first command (s)", "warm_start.warm_start_s", "<= 10", 10.0,
     "le"),
    ("disk for 20 GiB / 1 GiB base", "disk.ratio_20_over_1", "~1 (no growth)", None, ""),
    ("fetch throughput, harness / curl", "fetch.ratio_to_curl", ">= 0.9", 0.9, "ge"),
    ("fetch throughput, harness / curl + sha256sum", "fetch.ratio_to_curl_sha256sum",
     ">= 1.0", 1.0, "ge"),
    ("  CPU-s per fetch: harness / curl / curl+sha256sum", "fetch.cpu_s", "", None, ""),
    ("cached re-fetch (s)", "fetch.cached_refetch_s", "", None, ""),
    ("suites wall / guest boot time (restores)", "suites.restores.wall_over_boot", "", None, ""),
    ("suites wall / guest boot time (cold boots)", "suites.cold_boots.wall_over_boot", "", None,
     ""),
    ("suites wall, restores / cold boots", "suites.restores_over_cold", "", None, ""),
    ("harness peak RSS (MiB)", "memory.harness_peak_rss_mib", "", None, ""),
    ("QEMU peak RSS (MiB)", "memory.qemu_peak_rss_mib", "", None, ""),
]


def phases_line(result: dict) -> str:
    """Where the harness's boot goes (medians of the pairs), for finding what it adds."""
    phases = _get(result, "boot.phases_median_s") or {}
    return "harness boot, median seconds: " + ", ".join(f"{k} {v}" for k, v in phases.items())


def _get(result: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"bench on {m['cores']} cores, accelerator {m['accel']}, distro {m['distro']}",
             f"{'figure':48} {'value':>10}  {'target':>14}  note", "-" * 84]
    for label, key, target, limit, op in TARGETS:
        value = _get(result, key)
        note = ""
        if limit is not None and value is not None:
            ok = {"le": value <= limit, "lt": value < limit, "ge": value >= limit}[op]
            note = "met" if ok else "MISSED"
        shown = "not run" if value is None else value  # a figure not asked for
        lines.append(f"{label:48} {shown!s:>10}  {target:>14}  {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
