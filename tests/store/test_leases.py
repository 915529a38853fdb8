"""
Tests for L{twisted_s3sftp.store.leases}: leases mark this server's multipart
uploads, and the sweep aborts only the orphans among them.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from tests.sftp.test_server import PART, WRITE, SFTPTestCase, makeServer
from twisted_s3sftp.store.leases import Leases, markerKey
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.resume import decodeRecord

AGE = 3600.0
PREFIX = ".s3sftp/uploads/"


class SweepTests(SFTPTestCase):
    """
    Leases and the orphan sweep over an in-memory store.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryObjectStore(now=self.clock.seconds)
        self.leases = Leases(self.store, PREFIX, AGE, self.clock)
        self.server, _ = makeServer(self.store, clock=self.clock)
        self.server.avatar.leases = self.leases

    def markers(self) -> list[str]:
        """
        @return: the keys of the lease markers in the store.
        """
        return sorted(k for k in self.store.objects if k.startswith(PREFIX))

    def test_leaseLifeCycle(self) -> None:
        """
        A multipart upload writes a marker naming it, renews it while it
        runs, and deletes it when completed; a small upload (one
        PutObject) writes none.
        """
        f = self.successResultOf(self.server.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"x" * (PART + 10)))
        (marker,) = self.markers()
        ((uploadId, _),) = self.store.uploads.items()
        self.assertEqual(marker, markerKey(PREFIX, uploadId, "alice"))
        record = decodeRecord(self.store.objects[marker][0])
        self.assertEqual(
            (record.key, record.uploadId, record.user), ("alice/big", uploadId, "alice")
        )
        written = self.store.objects[marker][1]
        self.clock.advance(AGE / 4)
        self.assertEqual(self.store.objects[marker][1], written + AGE / 4)
        self.successResultOf(f.close())
        self.assertEqual(self.markers(), [])
        self.upload(self.server, b"small", b"tiny")
        self.assertEqual(self.markers(), [])

    def test_abortRemovesLease(self) -> None:
        """
        An aborted upload deletes its marker.
        """
        f = self.successResultOf(self.server.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"x" * (PART + 10)))
        self.successResultOf(f.abort("connection lost"))
        self.assertEqual((self.markers(), self.store.uploads), ([], {}))

    def test_sweepOrphansOnly(self) -> None:
        """
        The sweep aborts an upload whose marker was not renewed for the
        orphan age (its server crashed), and deletes the marker; it leaves
        a running upload, and a multipart upload without a marker (another
        tool's), alone.
        """
        crashed = self.successResultOf(self.server.openFile(b"crashed", WRITE, {}))
        self.successResultOf(crashed.writeChunk(0, b"c" * (PART + 10)))
        crashedLease = crashed._lease
        assert crashedLease is not None
        # The crashed server stops renewing.
        crashedLease._timer.cancel()
        foreign = self.successResultOf(self.store.createMultipartUpload("alice/foreign"))
        self.clock.advance(AGE / 2)
        running = self.successResultOf(self.server.openFile(b"running", WRITE, {}))
        self.successResultOf(running.writeChunk(0, b"r" * (PART + 10)))
        self.assertEqual(self.successResultOf(self.leases.sweep()), 0)
        self.clock.advance(AGE / 2 + 1)
        self.assertEqual(self.successResultOf(self.leases.sweep()), 1)
        remaining = {key for key, _ in self.store.uploads.values()}
        self.assertEqual(remaining, {"alice/running", "alice/foreign"})
        self.assertEqual(len(self.markers()), 1)
        self.assertIn(foreign, self.store.uploads)
        self.successResultOf(running.close())
        self.assertEqual(self.markers(), [])

    def test_finishedMeanwhile(self) -> None:
        """
        An old marker whose upload is already gone is simply deleted.
        """
        self.store.objects[markerKey(PREFIX, "gone")] = (
            b'{"key": "alice/x", "uploadId": "gone"}',
            0,
        )
        self.store.objects[PREFIX + "junk"] = (b"not json", 0)
        self.assertEqual(self.successResultOf(self.leases.sweep()), 1)
        self.assertEqual(self.markers(), [PREFIX + "junk"])
        self.flushLoggedErrors()
