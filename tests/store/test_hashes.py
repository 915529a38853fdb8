"""
Tests for L{twisted_s3sftp.store.hashes}: hashes whose state survives a
change of process.
"""

from __future__ import annotations

import hashlib
import random

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.store.hashes import MAX_STATE, ResumableSHA256, problem


class ResumableSHA256Tests(SynchronousTestCase):
    """
    L{ResumableSHA256} gives hashlib's digests, through any number of saves
    and restores at any offset.
    """

    def setUp(self) -> None:
        reason = problem()
        if reason is not None:  # pragma: no cover (a build without the API)
            self.skipTest(reason)

    def test_selfTest(self) -> None:
        """
        The start-up check passes on this machine's OpenSSL.
        """
        self.assertIsNone(problem())

    def test_digests(self) -> None:
        """
        Known digests, for bytes, bytearrays and memoryviews (read-only and
        writable); L{digest} does not end the hash.
        """
        hashed = ResumableSHA256()
        self.assertEqual(
            hashed.hexdigest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        hashed.update(b"ab")
        hashed.update(bytearray(b"c"))
        self.assertEqual(hashed.hexdigest(), hashlib.sha256(b"abc").hexdigest())
        hashed.update(memoryview(b"de"))
        hashed.update(memoryview(bytearray(b"f")))
        self.assertEqual(hashed.hexdigest(), hashlib.sha256(b"abcdef").hexdigest())

    def test_resumeAnywhere(self) -> None:
        """
        Saved after any prefix and restored in a new object, the hash goes
        on to hashlib's digest of the whole; every state is small.
        """
        data = random.Random(7).randbytes(5000)
        rng = random.Random(8)
        for _ in range(200):
            cut = rng.randrange(len(data))
            first = ResumableSHA256()
            first.update(data[:cut])
            state = first.state()
            self.assertLessEqual(len(state), MAX_STATE)
            second = ResumableSHA256.fromState(state)
            second.update(data[cut:])
            self.assertEqual(second.digest(), hashlib.sha256(data).digest(), cut)

    def test_portable(self) -> None:
        """
        A state is written big-endian, whatever the machine: the state of
        the empty hash is SHA-256's initial value.
        """
        self.assertEqual(
            ResumableSHA256().state().hex(),
            "01" + "6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19" + "0" * 16,
        )

    def test_badStates(self) -> None:
        """
        Anything but a saved state is refused.
        """
        good = ResumableSHA256()
        good.update(b"x" * 70)
        state = good.state()
        for bad in (b"", state[:-1], b"\x02" + state[1:], state + b"y" * 64):
            self.assertRaises(ValueError, ResumableSHA256.fromState, bad)
