"""Where the harness keeps things: one cache for built and fetched images, one
runtime directory for what a run creates and must remove again."""

import os
import stat
import tempfile
from pathlib import Path

from harness import settings

APP = "container-os-harness"
REPO = Path(__file__).resolve().parent.parent
# Traversable, not listable: QEMU (another uid under qemu:///system) opens the
# fw_cfg files libvirt relabels for it below here, but nobody can list run ids.
RUNTIME_MODE = 0o711
# Written when the harness makes a runtime folder: only a folder that carries it
# is ever chmodded or swept (HARNESS_RUNTIME may name a folder of other data).
RUNTIME_MARKER = ".container-os-harness-runtime"


class UnsafeRuntimeDir(RuntimeError):
    """The runtime folder could be changed by someone else: refused."""


def cache_dir() -> Path:
    """Images and other reusable results; survives runs, never inside the repository."""
    if configured := settings.get("HARNESS_CACHE"):
        return configured
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / APP


def _runtime_candidate() -> Path:
    if configured := settings.get("HARNESS_RUNTIME"):
        return configured
    if os.geteuid() == 0:
        # Only root can write /run. Not root's XDG_RUNTIME_DIR (/run/user/0, mode
        # 0700): QEMU, running as another user, must reach fw_cfg files below it.
        return Path("/run") / APP
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / APP
    return Path("/tmp") / f"{APP}-{os.geteuid()}"


def runtime_dir() -> Path:
    """Per-run files (keys, console logs, locks); `harness clean` sweeps it.
    HARNESS_RUNTIME, else /run/container-os-harness for root, else
    $XDG_RUNTIME_DIR/container-os-harness, else /tmp/container-os-harness-<uid>.

    Created with RUNTIME_MODE if missing; used only if it is a real folder (not a
    symlink) owned by us that nobody else can write, below folders nobody but root
    and us can change (sticky /tmp is fine), made by the harness (its marker).
    Otherwise UnsafeRuntimeDir."""
    path = _runtime_candidate()
    if not path.is_absolute():
        raise UnsafeRuntimeDir(f"runtime folder {path}: not an absolute path; "
                               "set HARNESS_RUNTIME to an absolute path")
    make_dirs(path.parent, 0o700)
    # Nobody but root and us can rename a folder above it, so checked once it stays.
    path = check_trusted_path(path.parent, "HARNESS_RUNTIME") / path.name
    try:
        path.mkdir(mode=RUNTIME_MODE)
        _mark(path)
    except FileExistsError:
        check_private_dir(path)
        _check_marked(path)
    os.chmod(path, RUNTIME_MODE)  # also narrows a listable (0755) one an older harness made
    return path


def _mark(path: Path) -> None:
    fd = os.open(path / RUNTIME_MARKER,
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


def _check_marked(path: Path) -> None:
    """An existing runtime folder is used only if the harness made it: it carries the
    marker, or it is empty, or it is the harness's own default (an older harness made
    it there before markers); it is marked then. Anything else is someone's data."""
    marker = path / RUNTIME_MARKER
    try:
        st = os.lstat(marker)
    except FileNotFoundError:
        if settings.get("HARNESS_RUNTIME") and any(path.iterdir()):
            raise UnsafeRuntimeDir(
                f"runtime folder {path} (HARNESS_RUNTIME) was not made by the harness (it "
                f"has no {RUNTIME_MARKER} file) and is not empty: refusing to use or clean "
                "it, its files may be someone's data; set HARNESS_RUNTIME to a folder the "
                "harness may make (a new path) or to an empty one") from None
        _mark(path)
        return
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise UnsafeRuntimeDir(f"runtime folder {path}: its {RUNTIME_MARKER} is not a file "
                               f"of uid {os.geteuid()}: refusing the folder; remove it or "
                               "set HARNESS_RUNTIME to a new path")


def make_dirs(path: Path, mode: int = 0o755) -> Path:
    """`mkdir -p`, but each folder it makes gets exactly `mode` whatever the umask: under
    a umask of 002 (many distros' default for users) a folder the harness made itself
    would be group-writable, and then refused by the harness's own checks."""
    missing, above = [], path
    while not os.path.lexists(above):
        missing.append(above)
        above = above.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            continue  # another process made it: the checks that follow judge it
        os.chmod(folder, mode)
    return path


def private_mkdir(path: Path, mode: int = RUNTIME_MODE, setting: str = "HARNESS_RUNTIME"
                  ) -> Path:
    """`path` as a folder of ours with exactly `mode` (whatever the umask); an
    existing one must pass check_private_dir (`setting` names where it came from)."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        check_private_dir(path, setting)
    os.chmod(path, mode)
    return path


def folder_problem(path: Path, st: os.stat_result) -> str | None:
    """What makes `path` (lstat `st`) a folder someone else could change: a symlink
    or no folder, another owner, or write access for group or others; None if none."""
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"folder {path} is not a plain folder (a symlink or a file)"
    if st.st_uid != os.geteuid():
        return (f"folder {path} is owned by uid {st.st_uid}, not by this process "
                f"(uid {os.geteuid()})")
    if st.st_mode & 0o022:
        return (f"folder {path} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}; `chmod go-w` it if you trust it)")
    return None


def check_private_dir(path: Path, setting: str = "HARNESS_RUNTIME") -> None:
    """Refuse a folder that is a symlink, not ours, or writable by group or others."""
    if problem := folder_problem(path, os.lstat(path)):
        raise UnsafeRuntimeDir(f"{problem}: refusing it; remove it (it may be someone "
                               f"else's trap) or set {setting} to a folder only uid "
                               f"{os.geteuid()} can write")


def check_trusted_path(path: Path, setting: str) -> Path:
    """`path` resolved, once no user but root and us could rename or replace it or
    any folder above it: each is owned by root or us, and one that group or others
    may write has the sticky bit (/tmp). Checked once, this holds for the whole run,
    so a folder below it cannot be swapped between a check and a use."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        st = os.stat(folder)
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafeRuntimeDir(
                f"{setting} {path}: {folder} is owned by uid {st.st_uid}, who could swap "
                f"what is below it after the harness checked it; set {setting} to a "
                f"folder in a place only root or uid {os.geteuid()} can change")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafeRuntimeDir(
                f"{setting} {path}: {folder} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}) without the sticky bit, so anyone could "
                f"swap what is below it; set {setting} to a folder in a safe place")
    return resolved


def replace_file(path: Path, text: str | bytes) -> None:
    """Write `path` as a new file renamed over the old name: a symlink or hard link
    planted at that name (in an artifacts folder others can write) is replaced, never
    written through."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
