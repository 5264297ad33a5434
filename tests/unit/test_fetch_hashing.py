"""Hashing while streaming (harness.images.fetch.HashBehind): the reader keeps going
while the hash thread is behind, and the digest is that of every chunk in order."""

import hashlib
import threading

import pytest

from harness.images.fetch import HashBehind


class _HeldHash:
    """A real sha256 whose updates wait until `go` is set: a hash thread that lost its
    core, which a real hash on an idle test machine cannot be made to do on purpose."""

    def __init__(self) -> None:
        self.real, self.go = hashlib.sha256(), threading.Event()

    def update(self, chunk: bytes) -> None:
        assert self.go.wait(10), "the test never let the hash thread go"
        self.real.update(chunk)


def test_the_reader_runs_ahead_of_a_stalled_hash_by_the_depth():
    h = _HeldHash()
    with HashBehind(h, depth=8) as hasher:
        added = threading.Event()

        def read_ahead() -> None:
            for i in range(8):  # all eight fit in the slack: none waits for the hash
                hasher.add(bytes([i]) * 4096)
            added.set()

        reader = threading.Thread(target=read_ahead)
        reader.start()
        reached = added.wait(5)
        h.go.set()
        reader.join()
        assert reached, "the reader waited for a stalled hash although the queue had room"


def test_the_digest_is_of_every_chunk_in_order():
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    h = hashlib.sha256()
    with HashBehind(h, depth=3) as hasher:
        for chunk in chunks:
            hasher.add(chunk)
    assert h.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_failing_hash_is_raised_not_lost():
    class Broken:
        def update(self, chunk: bytes) -> None:
            raise OSError("hash thread failed")

    with pytest.raises(OSError, match="hash thread failed"), \
            HashBehind(Broken(), depth=2) as hasher:
        hasher.add(b"x")
