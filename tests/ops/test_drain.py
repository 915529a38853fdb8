"""
Tests for L{twisted_s3sftp.ops.drain}: uploads under way are given time to
finish at shutdown, then aborted.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.filetransfer import FX_FAILURE
from twisted.internet.task import Clock

from tests.sftp.test_server import PART, WRITE, SFTPTestCase, makeServer
from twisted_s3sftp.ops.drain import DrainService


class FakePool:
    """
    Records whether the thread pool runs.
    """

    running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


class DrainTests(SFTPTestCase):
    """
    L{DrainService} holds the shutdown until uploads are done.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.store = makeServer(clock=self.clock)
        self.uploads = self.server.avatar.uploads
        self.pool = FakePool()
        self.service = DrainService(self.uploads, self.clock, 30.0, self.pool)  # type: ignore[arg-type]
        self.service.startService()
        self.assertTrue(self.pool.running)

    def write(self, path: bytes) -> Any:
        """
        @return: an upload of C{path} with more than a part written.
        """
        f = self.successResultOf(self.server.openFile(path, WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"d" * (PART + 10)))
        return f

    def test_nothingRunning(self) -> None:
        """
        With no upload under way, the shutdown goes ahead at once.
        """
        self.successResultOf(self.service.stopService())
        self.assertFalse(self.pool.running)

    def test_finishWithinTimeout(self) -> None:
        """
        An upload closed during the drain is stored, and the shutdown then
        goes ahead; a new upload meanwhile is refused.
        """
        f = self.write(b"a")
        stopping = self.service.stopService()
        self.clock.advance(10)
        self.assertNoResult(stopping)
        self.assertTrue(self.pool.running)
        e = self.assertStatus(self.server.openFile(b"late", WRITE, {}), FX_FAILURE)
        self.assertIn("shutting down", e.message)
        self.successResultOf(f.close())
        self.successResultOf(stopping)
        self.assertEqual(self.store.objects["alice/a"][0], b"d" * (PART + 10))
        self.assertFalse(self.pool.running)

    def test_abortAfterTimeout(self) -> None:
        """
        Uploads still open at the timeout are aborted: no object, no
        multipart upload; their CLOSE fails; the shutdown goes ahead.
        """
        f = self.write(b"a")
        g = self.write(b"b")
        self.assertEqual(len(self.store.uploads), 2)
        stopping = self.service.stopService()
        self.clock.advance(29.9)
        self.assertNoResult(stopping)
        self.clock.advance(0.1)
        self.successResultOf(stopping)
        self.assertEqual((self.store.objects, self.store.uploads), ({}, {}))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertStatus(g.close(), FX_FAILURE)
        self.assertEqual(len(self.uploads), 0)
        self.assertFalse(self.pool.running)

    def test_closeAnsweredBeforeDisconnect(self) -> None:
        """
        With connections to close, the drain closes them only after the
        last upload's CLOSE has been answered (the SFTP protocol holds the
        count from the CLOSE until its reply is written), and holds the
        shutdown until they are closed.
        """
        events: list[str] = []
        closing: Any = None

        def closeConnections() -> Any:
            nonlocal closing
            from twisted.internet.defer import Deferred

            events.append("disconnect")
            closing = Deferred()
            return closing

        service = DrainService(
            self.uploads,
            self.clock,
            30.0,
            self.pool,  # type: ignore[arg-type]
            closeConnections,
        )
        service.startService()
        f = self.write(b"a")
        stopping = service.stopService()
        # As S3FileTransferServer.packet_CLOSE does.
        self.uploads.holdReply()
        closed = f.close()
        closed.addCallback(lambda _: events.append("CLOSE answered"))
        closed.addBoth(lambda _: self.uploads.releaseReply())
        self.successResultOf(closed)
        self.assertEqual(events, ["CLOSE answered", "disconnect"])
        self.assertNoResult(stopping)
        closing.callback(None)
        self.successResultOf(stopping)
        self.assertFalse(self.pool.running)

    def test_readsFinishWithinTimeout(self) -> None:
        """
        Downloads and listings open at the signal may finish within the
        drain timeout, counted from the signal (uploads included); those
        still open then are left to the disconnect.
        """
        f = self.write(b"a")
        self.uploads.holdRead()
        self.uploads.holdRead()
        stopping = self.service.stopService()
        self.clock.advance(10)
        self.successResultOf(f.close())
        self.uploads.releaseRead()
        self.clock.advance(10)
        self.assertNoResult(stopping)
        self.assertTrue(self.pool.running)
        self.uploads.releaseRead()
        self.successResultOf(stopping)
        self.assertFalse(self.pool.running)
        self.uploads.holdRead()
        service = DrainService(self.uploads, self.clock, 30.0, self.pool)  # type: ignore[arg-type]
        service.startService()
        stopping = service.stopService()
        self.clock.advance(29.9)
        self.assertNoResult(stopping)
        self.clock.advance(0.1)
        self.successResultOf(stopping)
