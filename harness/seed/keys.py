"""Per-run SSH keys: one client key pair to log in, one host key pair the guest
is given through its seed, so the harness verifies the guest instead of
trusting whatever answers on the forwarded port.

The seed also carries an RSA and an ECDSA host key (`spare_host_keys`), never
trusted by the harness. Given only the ed25519 key, cloud-init makes no host keys
(canonical/cloud-init cloudinit/config/cc_ssh.py at 22.4.2: keys are generated
only when `ssh_keys` names none), and `ssh-keygen -A`, which refos's ssh.service
runs before sshd (images/refos/overlay/etc/systemd/system/ssh.service.d), makes
every default type missing, rsa, ecdsa and ed25519 (ssh-keygen(1), OpenSSH
9.2p1). Measured on refos under TCG, that RSA key took about 25 s while docker
started beside it, and sshd listened only after it; the host makes both keys in
about 0.1 s."""

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.paths import private_mkdir


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public: str  # "ssh-ed25519 AAAA... comment"

    @property
    def private_pem(self) -> str:
        return self.private_path.read_text()

    @property
    def kind(self) -> str:
        """OpenSSH's short name of the key type (as in ssh_host_KIND_key)."""
        return KINDS[self.public.split()[0]]

    @property
    def public_blob(self) -> str:
        """The base64 part, as known_hosts and paramiko compare it."""
        return self.public.split()[1]


KINDS = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa"}
MAKERS = {"ed25519": Ed25519PrivateKey.generate,
          "rsa": lambda: rsa.generate_private_key(65537, 3072),  # ssh-keygen's default size
          "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1())}


def generate(directory: Path, name: str, comment: str, kind: str = "ed25519") -> KeyPair:
    """Write a key pair (ed25519 unless `kind` says rsa or ecdsa) as NAME (mode 0600)
    and NAME.pub."""
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_mkdir(directory, 0o700, "the keys' folder")  # never a planted symlink or folder
    key = MAKERS[kind]()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() + f" {comment}"
    path = directory / name
    _write(path, private, 0o600)
    _write(directory / f"{name}.pub", (public + "\n").encode(), 0o644)
    return KeyPair(path, public)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Never through a symlink (O_NOFOLLOW), in a folder checked to be ours alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def spare_host_keys(directory: Path, comment: str) -> tuple[KeyPair, ...]:
    """The RSA and ECDSA host keys the guest would otherwise make at boot (see above)."""
    return tuple(generate(directory, f"ssh_host_{kind}_key", comment, kind)
                 for kind in ("rsa", "ecdsa"))
