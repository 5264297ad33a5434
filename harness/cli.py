"""`harness`: the command line. Subcommands: list, build, run, boot, fetch, seed, repro,
clean, matrix, report."""

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from harness import catalog, images, settings
from harness.images import build
from harness.log import log, setup_cli_logging
from harness.paths import REPO, UnsafeRuntimeDir, check_private_dir, make_dirs
from harness.safefs import UntrustedCache

if TYPE_CHECKING:  # pytest is imported only by the commands that run it
    from pytest import TestReport
from harness.signals import unwind_on_sigterm
from harness.vm import accel, runs
from harness.vm.session import (
    Options,
    Session,
    SessionError,
    libvirt_uri,
    options_for_images,
)


def cmd_list(args: argparse.Namespace) -> int:
    """The distros the catalog knows, from the catalog and the cache only: nothing is
    downloaded or built."""
    from harness import listing, matrix

    found = listing.entries(matrix.select(",".join(args.distro) or "all"))
    print(listing.as_json(found) if args.json else listing.as_table(found))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    images.check_build_cache()
    built = build.build(force=args.force)
    manifest = built.manifest()
    print(f"refos build {manifest['build_id']} in {built.root} "
          f"(built in {manifest['seconds']}s)")
    for name, size in sorted(manifest["sizes"].items()):
        print(f"  {name:28} {size / 2**20:8.1f} MiB")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: boot the distro, run the suites, say where the evidence is."""
    import pytest

    distro = catalog.get(args.distro)  # an unknown name is a usage error, before any change
    artifacts = Path(args.artifacts).resolve()
    # A fresh folder per run, so the summary lists this run's console logs only.
    fresh_folder(artifacts, distro.name)
    junit = artifacts / distro.name / "junit.xml"
    started = time.monotonic()
    passed_on = [f"--libvirt-uri={args.libvirt_uri}", *(["--offline"] if args.offline else []),
                 *([f"--image={args.image}"] if args.image else []),
                 *(["--open-network"] if args.open_network else [])]
    status = pytest.main([str(REPO / "tests" / "suites"), f"--distro={args.distro}",
                          f"--accel={args.accel}", f"--artifacts={artifacts}", *passed_on,
                          f"--junitxml={junit}", "-p", "no:cacheprovider", *args.pytest_args])
    print(f"\nharness run: {args.distro}: {'passed' if status == 0 else 'FAILED'} "
          f"in {time.monotonic() - started:.0f}s")
    print(f"  JUnit report:  {junit}")
    for console in sorted((artifacts / distro.name).glob("*/console.log")):
        print(f"  console log:   {console}")
    return int(status)


class UsageError(ValueError):
    """Bad command-line input; the message names it and what to do."""


def fresh_folder(parent: Path, name: str) -> Path:
    """`parent/name` emptied (or made): only ever a folder directly inside `parent`;
    a symlink there is removed, never followed."""
    folder = parent / name
    if name in ("", ".", "..") or "/" in name or "\0" in name or folder.parent != parent:
        raise UsageError(f"{name!r} cannot name a folder inside {parent}")
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def cmd_boot(args: argparse.Namespace) -> int:
    """Boot a machine and keep it until Ctrl-C."""
    distro = catalog.get(args.distro)
    options = Options(libvirt_uri=args.libvirt_uri, accel=args.accel, offline=args.offline,
                      images=options_for_images(distro.name, args.image), saves=False,
                      open_network=args.open_network)
    with Session(options) as session:
        m = session.machine(args.name or distro.name, session.spec(distro), cold=True)
        print(f"\n{m.name} is up. Get in with:\n  {m.ssh_command()}\n"
              f"console log: {m.console_log}\nCtrl-C removes it.", flush=True)
        try:
            while True:
                m.watchdog()
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nremoving the machine")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove what runs that are no longer alive left behind (never a live run's)."""
    try:
        conn = libvirt.open(args.libvirt_uri)
    except libvirt.libvirtError as e:
        raise SessionError(f"cannot connect to libvirt at {args.libvirt_uri}: {e}") from None
    removed = runs.sweep(conn)
    print(f"removed {len(removed)} leftover(s) of dead runs" if removed else "nothing to clean")
    if args.saves:
        return _clean_saves(conn)
    return 0


def _clean_saves(conn: libvirt.virConnect) -> int:
    """Empty the warm cache of saved machines (what a live session uses stays)."""
    from harness.vm import savecache

    gone, busy = savecache.SaveCache(conn).clear()
    print(f"removed {len(gone)} saved machine(s)")
    if busy:
        print(f"left {len(busy)} in use by a running session: {', '.join(busy)}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Put distros' images in the cache (or find them there) and say where they are; or
    list the files they need (--urls), bring them in from a folder (--import DIR), or
    hash the whole cache again (--verify)."""
    import dataclasses
    import json

    from harness.images import fetch

    try:
        policy = fetch.Policy.from_env()
        policy = dataclasses.replace(
            policy, mirrors=fetch.parse_mirrors(" ".join(args.mirror)) + policy.mirrors,
            allow_insecure_http=policy.allow_insecure_http or args.allow_insecure_http,
            import_dir=str(Path(args.import_dir).resolve()) if args.import_dir else "",
            trust_import=args.trust_import)
    except fetch.FetchError as e:
        log.error("%s", e)
        return 2
    if args.verify:
        return _verify_cache()
    if not args.distro:
        log.error("harness fetch: name at least one distro (or use --verify)")
        return 2
    if args.import_dir and not Path(args.import_dir).is_dir():
        log.error("--import %s: not a folder", args.import_dir)
        return 2
    distros = [catalog.get(name) for name in args.distro]
    if args.image and len(distros) != 1:
        raise UsageError(f"--image={args.image}: give it with one distro, not {len(distros)}")
    if args.urls:
        listed = [images.needed_files(d, dataclasses.replace(policy, attempts=1), args.offline)
                  for d in distros]
        for entry in listed:
            if entry["note"]:
                log.warning("%s: %s", entry["distro"], entry["note"])
        print(json.dumps(listed, indent=2) if args.json else
              "\n".join(f["url"] for entry in listed for f in entry["files"]))
        return 0
    status = 0
    for distro in distros:
        try:
            image = images.resolve(distro, offline=args.offline, image_path=args.image,
                                   policy=policy)
        except images.ImageUnavailable as e:
            log.error("%s", e)
            status = 2
            continue
        print(f"{distro.name}: {image.path}")
        for name, value in image.record().items():
            if value and name != "path":
                print(f"  {name:11} {value}")
    return status


def _verify_cache() -> int:
    from harness.images import fetch

    results = fetch.verify_cache()
    for url, digest, good in results:
        print(f"{'ok     ' if good else 'CHANGED'} {url} ({digest})"
              + ("" if good else ": removed from the cache"))
    print(f"{len(results)} cached download(s) hashed again, "
          f"{sum(not good for _, _, good in results)} changed")
    return 0 if all(good for _, _, good in results) else 1


def cmd_seed(args: argparse.Namespace) -> int:
    """Write the first-boot media a distro would get, with throwaway keys, for inspection."""
    from harness import seed
    from harness.seed import keys
    from harness.seed.base import private_file

    distro = catalog.get(args.distro)
    extra = _read_extra(Path(args.extra)) if args.extra else {}
    out = _out_folder(Path(args.out))
    keydir = out / "keys"
    client = keys.generate(keydir, "id_ed25519", "harness-seed-inspection")
    host = keys.generate(keydir, "ssh_host_ed25519_key", "harness-seed-inspection")
    fmt = args.format or distro.boot.seed
    options = distro.boot.seed_options if fmt == distro.boot.seed else {}
    try:
        intent = seed.Intent(hostname=args.hostname or distro.name.replace("_", "-").lower(),
                             user=distro.boot.ssh_user, authorized_keys=(client.public,),
                             host_key=host, extra=extra)
        media = seed.build(fmt, intent, out, options)
    except seed.SeedError as e:
        log.error("%s: %s", distro.name, e)
        return 2
    for name, data in media.files.items():
        (out / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        with private_file(out / "files" / name) as f:  # may hold the throwaway host key
            f.write(data)
    print(f"{distro.name}: {fmt} seed in {out} (throwaway keys in {keydir})")
    shown = {"disk": media.disk, "fw_cfg": media.fw_cfg, "kernel args": media.kernel_args,
             "password login": media.password_login, "notes": media.notes}
    for label, value in shown.items():
        if value:
            print(f"  {label:15} {value}")
    print(f"  {'host key given':15} {media.host_key_given}")
    for name in media.files:
        print(f"  file            {out / 'files' / name}")
    return 0


def _read_extra(path: Path) -> str:
    try:
        return path.read_bytes().decode()
    except OSError as e:
        raise UsageError(f"--extra {path}: cannot read it ({e.strerror}); give a YAML "
                         "file of extra configuration") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--extra {path}: not UTF-8 text (byte {e.start}); "
                         "save the YAML as UTF-8") from None


def _out_folder(out: Path) -> Path:
    """--out as a folder on disk, made if missing; never a file or a kernel file system."""
    resolved = out.resolve()
    kernel = next((p for p in ("/proc", "/sys", "/dev") if resolved.is_relative_to(p)), None)
    if kernel:
        raise UsageError(f"--out {out}: lies under {kernel}, a kernel file system; "
                         "give a folder on disk")
    if resolved.exists() and not resolved.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; give a folder "
                         "(it is made if missing)")
    try:
        make_dirs(resolved, 0o700)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot make the folder ({e.strerror})") from None
    try:  # keys are written below it: nobody else may have planted names there
        check_private_dir(resolved, "--out")
    except UnsafeRuntimeDir as e:
        raise UsageError(f"--out {out}: {e}") from None
    return resolved


def cmd_repro(args: argparse.Namespace) -> int:
    """Boot the image a bug was reported against, run its reproduction, show its
    failure, and say whether it was the bug and where the evidence is."""
    import pytest

    from harness.plugin import bugs

    try:
        case = bugs.find(args.bug)
    except LookupError as e:
        log.error("%s", e)
        return 2
    targets = [args.distro] if args.distro else list(case.bug.affected)
    artifacts = Path(args.artifacts).resolve()
    status = 0
    for target in targets:
        print(f"harness repro: {args.bug} on {target} ({case.bug.link()})")
        argv = [case.node(target), f"--distro={target}", f"--artifacts={artifacts}",
                "--rootdir", str(REPO), "-rA", "-p", "no:cacheprovider",
                *(["--offline"] if args.offline else []), *(["--keep-vm"] if args.keep_vm else [])]
        outcomes = _Outcomes()
        code = int(pytest.main(argv, plugins=[outcomes]))
        verdict = outcomes.verdict(code)
        status = status or (1 if verdict == "REPRODUCED" else code)
        print(f"\nharness repro: {target}: {verdict}")
        for found in sorted((artifacts / target).glob("**/console.log")):
            print(f"  evidence:      {found.parent}")
    return status


class _Outcomes:
    """A pytest plugin that shows a reproduction's failure (the bug plugin reports it
    as "reproduces <url>") and tells it from a pass, another failure or a skip."""

    def __init__(self) -> None:
        self.reproduced = self.ran = self.skipped = 0

    def pytest_runtest_logreport(self, report: "TestReport") -> None:
        if str(getattr(report, "wasxfail", "")).startswith("reproduces "):
            self.reproduced += 1
            print(f"\n--- the failure ---\n{report.longreprtext}")
        elif report.skipped:
            self.skipped += 1
        elif report.when == "call":
            self.ran += 1

    def verdict(self, code: int) -> str:
        if self.reproduced:
            return "REPRODUCED"
        if self.skipped and not self.ran:
            return "not tried (skipped; the reason is above)"
        return {0: "did not reproduce"}.get(
            code, f"did not reproduce: pytest exited {code} (the reason is above)")


def cmd_report(args: argparse.Namespace) -> int:
    """Write report.md and report.html from a run's artifacts folder."""
    from harness import report

    folder = Path(args.artifacts_dir)
    if not folder.is_dir():
        raise UsageError(f"report: {folder} is not a folder; give the artifacts folder a "
                         "`harness run` or `harness matrix` wrote")
    md, page = report.write(folder)
    print(f"report: {md}\n        {page}")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    """The suites over several distros at once (memory permitting), then the report."""
    from harness import matrix, report

    names = matrix.select(args.distro)
    uris = [u for given in args.uris or [args.libvirt_uri] for u in given.split(",") if u]
    artifacts = Path(args.artifacts).resolve()
    opts = matrix.MatrixOptions(artifacts, uris, args.suites or [str(REPO / "tests" / "suites")],
                          args.accel, args.offline, args.margin_mib, tuple(args.pytest_args))
    free = matrix.free_by_host(uris)
    print("harness matrix: " + ", ".join(names) + "; free memory: "
          + ", ".join(f"{u} {mib} MiB" for u, mib in free.items()), flush=True)
    statuses = matrix.run(names, opts, free)
    md, page = report.write(artifacts)
    print("\nharness matrix:", *matrix.summary(statuses), f"  report: {md}\n          {page}",
          sep="\n")
    return matrix.exit_code(statuses)


OPEN_NETWORK = ("let the guest reach every network this host reaches (restrict=off), for "
                "updates from a vendor's server; off by default, machines boot cold")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--libvirt-uri", default=None,
                   help="libvirt connection (default: LIBVIRT_DEFAULT_URI or qemu:///system)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the distros: family, updates, firmware, image, promises")
    ls.add_argument("distro", nargs="*", help="catalog entries, or a,b,c (default: all)")
    ls.add_argument("--json", action="store_true", help="one line of JSON, for scripts")
    ls.set_defaults(func=cmd_list)
    b = sub.add_parser("build", help="build refos (cached by recipe hash)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(func=cmd_build)
    r = sub.add_parser("run", help="boot a distro and run the suites against it")
    r.add_argument("--distro", default="refos")
    r.add_argument("--accel", default="auto")
    r.add_argument("--offline", action="store_true", help="use cached images only")
    r.add_argument("--image", default=None, help="boot this local image file instead")
    r.add_argument("--open-network", action="store_true", help=OPEN_NETWORK)
    r.add_argument("--artifacts", default=str(REPO / "artifacts"))
    r.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    r.set_defaults(func=cmd_run)
    bt = sub.add_parser("boot", help="boot a machine and keep it until Ctrl-C")
    bt.add_argument("distro")
    bt.add_argument("--name", default="")
    bt.add_argument("--accel", default="auto")
    bt.add_argument("--offline", action="store_true", help="use the cache only")
    bt.add_argument("--image", default=None, help="boot this local file instead")
    bt.add_argument("--open-network", action="store_true", help=OPEN_NETWORK)
    bt.set_defaults(func=cmd_boot)
    f = sub.add_parser("fetch", help="download and verify distros' images into the cache")
    f.add_argument("distro", nargs="*", help="catalog entries")
    f.add_argument("--offline", action="store_true", help="use the cache only")
    f.add_argument("--image", default=None, help="use this local file instead of downloading")
    f.add_argument("--urls", action="store_true",
                   help="print every file the distros need, one URL a line (for curl or wget)")
    f.add_argument("--json", action="store_true", help="with --urls: as JSON, with digests")
    f.add_argument("--import", dest="import_dir", default="", metavar="DIR",
                   help="take the files from DIR (downloaded elsewhere), verified as downloads")
    f.add_argument("--trust-import", action="store_true",
                   help="with --import: accept DIR's own checksum files or stream metadata "
                        "when nothing else vouches for the image (logged as UNVERIFIED)")
    f.add_argument("--mirror", action="append", default=[], metavar="HOST=URL",
                   help="serve HOST's files from URL instead (repeatable; also HARNESS_MIRRORS)")
    f.add_argument("--allow-insecure-http", action="store_true",
                   help="accept a digest read over plain HTTP (logged; also "
                        "HARNESS_ALLOW_INSECURE_HTTP=1)")
    f.add_argument("--verify", action="store_true",
                   help="hash every cached download again; changed ones leave the cache")
    f.set_defaults(func=cmd_fetch)
    sd = sub.add_parser("seed", help="write a distro's first-boot media, for inspection")
    sd.add_argument("distro")
    sd.add_argument("--out", required=True, help="directory for the media and its files")
    sd.add_argument("--extra", default="",
                    help="YAML file of extra configuration (examples: seeds/examples/)")
    sd.add_argument("--format", default="", help="another seed format than the catalog's")
    sd.add_argument("--hostname", default="")
    sd.set_defaults(func=cmd_seed)
    rp = sub.add_parser("repro", help="reproduce a reported bug on the image it affects")
    rp.add_argument("bug", help="a tests/bugs case without test_, e.g. docker_apparmor")
    rp.add_argument("--distro", default="", help="another catalog entry than the affected")
    rp.add_argument("--artifacts", default=str(REPO / "artifacts"))
    rp.add_argument("--offline", action="store_true", help="use cached images only")
    rp.add_argument("--keep-vm", action="store_true",
                    help="leave the VM up when the bug shows, and print the ssh command")
    rp.set_defaults(func=cmd_repro)
    c = sub.add_parser("clean", help="remove what killed runs left behind")
    c.add_argument("--saves", action="store_true",
                   help="also empty the cache of saved machines (warm starts)")
    c.set_defaults(func=cmd_clean)
    m = sub.add_parser("matrix", help="run the suites over several distros, then the report")
    m.add_argument("--distro", default="all", help="a,b,c or all (default: all)")
    m.add_argument("--libvirt-uri", dest="uris", action="append", default=[],
                   help="a host to run on; repeat (or a,b) to spread over several")
    m.add_argument("--artifacts", default=str(REPO / "artifacts"))
    m.add_argument("--accel", default="auto")
    m.add_argument("--offline", action="store_true", help="use cached images only")
    m.add_argument("--margin-mib", type=int, default=1024,
                   help="memory left free on every host (default: 1024)")
    m.add_argument("--suite", dest="suites", action="append", default=[],
                   help="test path to run (default: tests/suites); repeatable")
    m.add_argument("pytest_args", nargs="*", help="passed on to each pytest (after --)")
    m.set_defaults(func=cmd_matrix)
    rp = sub.add_parser("report", help="write the comparison report from a run's artifacts")
    rp.add_argument("artifacts_dir", nargs="?", default=str(REPO / "artifacts"))
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.libvirt_uri = libvirt_uri(args.libvirt_uri)
    setup_cli_logging(args.verbose)
    try:
        images.check_settings()
        # SIGTERM unwinds like Ctrl-C, so sessions and `finally` blocks remove machines.
        with unwind_on_sigterm():
            return args.func(args)
    except (UsageError, catalog.CatalogError, images.ImageUnavailable, images.ImageUsageError,
            accel.AccelError, build.BuildError, settings.SettingError, SessionError,
            UnsafeRuntimeDir, UntrustedCache) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
