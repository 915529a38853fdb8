"""
Tests for L{twisted_s3sftp.store.hashes}: hashes whose state survives a
change of process.
"""

from __future__ import annotations

import hashlib
import random

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.store.hashes import (
    MAX_STATE,
    FileHashes,
    ResumableMD5,
    ResumableSHA1,
    ResumableSHA256,
    hashMetadata,
    parseAlgorithms,
    problem,
    storedDigests,
    storedStates,
)


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


class ResumableOthersTests(SynchronousTestCase):
    """
    L{ResumableMD5} and L{ResumableSHA1} give hashlib's digests through
    saves and restores, as SHA-256 does.
    """

    def test_resumeAnywhere(self) -> None:
        """
        Saved after any prefix and restored, each goes on to hashlib's
        digest of the whole; a state of one is refused by the other.
        """
        data = random.Random(9).randbytes(3000)
        rng = random.Random(10)
        for resumable in (ResumableMD5, ResumableSHA1):
            self.assertIsNone(problem(resumable.algorithm))
            for _ in range(100):
                cut = rng.randrange(len(data))
                first = resumable()
                first.update(data[:cut])
                second = resumable.fromState(first.state())
                second.update(memoryview(bytearray(data[cut:])))
                reference = hashlib.new(resumable.algorithm, data)
                self.assertEqual(second.digest(), reference.digest(), cut)
        self.assertRaises(ValueError, ResumableMD5.fromState, ResumableSHA1().state())


class FileHashesTests(SynchronousTestCase):
    """
    L{FileHashes}: several hashes of one file, saved and restored as one
    state, and kept in an object's metadata.
    """

    def test_oneState(self) -> None:
        """
        The state of several algorithms restores all of them; the state
        of SHA-256 alone is that hash's own (what leases held before MD5
        was kept), and restores as SHA-256 alone.
        """
        data = random.Random(11).randbytes(777)
        hashes = FileHashes(("md5", "sha256", "sha1"))
        self.assertEqual(hashes.algorithms, ("sha256", "md5", "sha1"))
        hashes.update(data[:300])
        restored = FileHashes.fromState(hashes.state() or b"")
        restored.update(data[300:])
        self.assertEqual(
            restored.digests(),
            {name: hashlib.new(name, data).digest() for name in ("sha256", "md5", "sha1")},
        )
        alone = FileHashes()
        alone.update(data)
        self.assertEqual(alone.state(), alone.states()["sha256"])
        self.assertEqual(FileHashes.fromState(alone.state() or b"").algorithms, ("sha256",))
        for bad in (b"\x03", b"\x02\x01\x05abc", b"\x02" + bytes([1, 3]) + b"abc"):
            self.assertRaises(ValueError, FileHashes.fromState, bad)

    def test_algorithms(self) -> None:
        """
        C{--hashes} takes names in any order and case, always keeps
        SHA-256, and refuses an unknown name.
        """
        self.assertEqual(parseAlgorithms("MD5"), ("sha256", "md5"))
        self.assertEqual(parseAlgorithms("sha1, sha256"), ("sha256", "sha1"))
        self.assertEqual(parseAlgorithms(""), ("sha256",))
        self.assertRaises(ValueError, parseAlgorithms, "sha256,crc32")

    def test_metadata(self) -> None:
        """
        The digests are kept as rclone's S3 backend and the gateway read
        them (MD5 in base64 as C{md5chksum}, the others in hex), with their
        states; read back, a malformed value is left out, and so is a state
        of another size than the object's (metadata copied elsewhere).
        """
        hashes = FileHashes(("sha256", "md5", "sha1"))
        hashes.update(b"abc")
        metadata = hashMetadata(hashes)
        self.assertEqual(metadata["md5chksum"], "kAFQmDzST7DWlj99KOF/cg==")
        self.assertEqual(metadata["sha1"], hashlib.sha1(b"abc").hexdigest())
        self.assertEqual(metadata["sha256"], hashlib.sha256(b"abc").hexdigest())
        self.assertEqual(storedDigests(metadata), hashes.digests())
        self.assertEqual(set(storedStates(metadata, 3)), {"sha256", "md5", "sha1"})
        self.assertEqual(storedStates(metadata, 4), {})
        self.assertLess(sum(len(k) + len(v) for k, v in metadata.items()), 1024)
        broken = metadata | {"md5chksum": "not base64!", "sha1": "12", "md5-state": "AAAA"}
        self.assertEqual(set(storedDigests(broken)), {"sha256"})
        self.assertEqual(set(storedStates(broken, 3)), {"sha256", "sha1"})
