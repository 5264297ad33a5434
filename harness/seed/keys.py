"""Per-run SSH keys: one client key pair to log in, one host key pair the guest
is given through its seed, so the harness verifies the guest instead of
trusting whatever answers on the forwarded port."""

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public: str  # "ssh-ed25519 AAAA... comment"

    @property
    def private_pem(self) -> str:
        return self.private_path.read_text()

    @property
    def public_blob(self) -> str:
        """The base64 part, as known_hosts and paramiko compare it."""
        return self.public.split()[1]


def generate(directory: Path, name: str, comment: str) -> KeyPair:
    """Write an ed25519 key pair as NAME (mode 0600) and NAME.pub."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() + f" {comment}"
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (directory / f"{name}.pub").write_text(public + "\n")
    return KeyPair(path, public)
