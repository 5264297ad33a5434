"""Check a vendor's OpenPGP signature with gpgv against one key kept in the repo.

gpgv trusts exactly the keys in the keyring it is given, and nothing else: no
user keyring, no trust database, no key server. Its keyring must be binary, so
the repo's armored key (reviewable text) is de-armored into a temporary file.
Vendors sign in two ways (coreos/scripts build_library/release_util.sh at
9f9208a5; flatcar/scripts ci-automation/ci_automation_common.sh at ab6d76d9):
a clearsigned checksum file (`.DIGESTS.asc`) and a detached signature of the
file itself (`.sig`, binary OpenPGP: it is handled as bytes throughout, never
decoded). Only the text inside a verified clearsigned message is used, never
lines around it.
"""

import base64
import subprocess
import tempfile
from pathlib import Path

CLEARSIGNED = b"-----BEGIN PGP SIGNED MESSAGE-----"


class BadSignature(RuntimeError):
    """The signature did not verify; the message carries gpgv's own words."""


def is_clearsigned(data: bytes | str) -> bool:
    raw = data.encode() if isinstance(data, str) else data
    return raw.lstrip().startswith(CLEARSIGNED)


def verify_clearsigned(message: bytes | str, key: Path) -> str:
    """The signed text of a clearsigned message, once gpgv has verified it."""
    with tempfile.TemporaryDirectory(prefix="harness-gpgv-") as tmp:
        msg, out = Path(tmp) / "message.asc", Path(tmp) / "signed.txt"
        msg.write_bytes(message.encode() if isinstance(message, str) else message)
        _gpgv(key.resolve(), Path(tmp), "--output", str(out), str(msg))
        try:
            return out.read_bytes().decode()
        except UnicodeDecodeError as e:
            raise BadSignature(f"the signed text is not UTF-8 ({e.reason} at byte "
                               f"{e.start})") from None


def verify_detached(sig: str | bytes, data: Path, key: Path) -> None:
    """Raise BadSignature unless `sig` is a good signature of `data` by `key`."""
    with tempfile.TemporaryDirectory(prefix="harness-gpgv-") as tmp:
        sigfile = Path(tmp) / "data.sig"
        sigfile.write_bytes(sig.encode() if isinstance(sig, str) else sig)
        _gpgv(key.resolve(), Path(tmp), str(sigfile), str(data.resolve()))


def _gpgv(key: Path, tmp: Path, *args: str) -> None:
    keyring = tmp / "vendor.gpg"
    keyring.write_bytes(dearmor(key))
    cmd = ["gpgv", "--homedir", str(tmp), "--status-fd", "1", "--keyring", str(keyring), *args]
    try:
        # errors="replace": gpgv quotes the signature's own bytes (user IDs, notations)
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=tmp,
                           timeout=600)
    except FileNotFoundError:
        raise BadSignature("gpgv is not installed (Debian package gpgv)") from None
    if r.returncode != 0 or not _good(r.stdout.split()):
        words = " ".join(line.removeprefix("gpgv: ") for line in r.stderr.splitlines()[-3:])
        raise BadSignature(f"signature does not verify with {key.name}: {words}")


def _good(status: list[str]) -> bool:
    """A valid signature by a key that is good, or that expired since: vendors' keys of
    historic releases (CoreOS 2015) have all expired. A revoked key is not accepted."""
    if {"BADSIG", "ERRSIG", "REVKEYSIG", "EXPSIG"} & set(status):
        return False
    return "VALIDSIG" in status and bool({"GOODSIG", "EXPKEYSIG"} & set(status))


def dearmor(key: Path) -> bytes:
    """The binary form of an ASCII-armored public key (a binary key is returned as is)."""
    data = key.read_bytes()
    if not data.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
        return data
    lines = data.decode().strip().splitlines()[1:]
    blank = next((i for i, x in enumerate(lines) if not x.strip()), -1)  # after headers
    b64 = "".join(x.strip() for x in lines[blank + 1:] if not x.startswith(("=", "-----")))
    return base64.b64decode(b64)
