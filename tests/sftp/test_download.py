"""
Downloads (L{twisted_s3sftp.sftp.download.DownloadFile}) over an in-memory
store: exact bytes and EOF, bounded read-ahead, ranged reads for random
access, and a file replaced mid-download.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.conch.ssh.filetransfer import (
    FX_EOF,
    FX_FAILURE,
    FX_OP_UNSUPPORTED,
    FXF_READ,
)
from twisted.internet.defer import Deferred

from tests.sftp.test_server import SFTPTestCase, makeServer
from twisted_s3sftp.sftp.download import BLOCK_SIZE, READ_AHEAD, downloadReservation
from twisted_s3sftp.sftp.extensions import MAX_READ
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB


class RecordingStore(MemoryObjectStore):
    """
    A memory store that records the range of every C{getObject}.
    """

    ranges: list[tuple[int, int]]

    def getObject(self, key: str, start: int, length: int, etag: str) -> Deferred[Any]:
        self.ranges.append((start, length))
        return super().getObject(key, start, length, etag)


def makeStore() -> RecordingStore:
    store = RecordingStore()
    store.ranges = []
    return store


class DownloadTests(SFTPTestCase):
    """
    Reading files back.
    """

    def test_sequential(self) -> None:
        """
        A file read in order, in reads of any size, comes back exactly; a
        read past the end is short, a read at the end is C{FX_EOF}; an
        empty file is at EOF at once.
        """
        store = makeStore()
        server, _ = makeServer(store)
        data = random.Random(1).randbytes(3 * BLOCK_SIZE + 12345)
        store.objects["alice/f"] = (data, 0)
        store.objects["alice/empty"] = (b"", 0)
        for chunk in (32768, 100_000, MAX_READ):
            f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
            got = []
            for offset in range(0, len(data), chunk):
                got.append(self.successResultOf(f.readChunk(offset, chunk)))
            self.assertEqual(b"".join(got), data)
            self.assertStatus(f.readChunk(len(data), chunk), FX_EOF)
            self.assertStatus(f.readChunk(len(data) + 99, chunk), FX_EOF)
            self.successResultOf(f.close())
        f = self.successResultOf(server.openFile(b"empty", FXF_READ, {}))
        self.assertStatus(f.readChunk(0, 100), FX_EOF)
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], 0)

    def test_readCapped(self) -> None:
        """
        A READ longer than the server's limit gets a short reply of
        L{MAX_READ} bytes, which SFTP allows.
        """
        server, store = makeServer()
        store.objects["alice/f"] = (b"z" * MiB, 0)
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.assertEqual(len(self.successResultOf(f.readChunk(0, 10 * MiB))), MAX_READ)

    def test_readAheadBounded(self) -> None:
        """
        A sequential reader gets blocks fetched ahead of it, never more
        than L{READ_AHEAD} past its latest READ, and blocks it has passed
        are dropped: memory per download stays bounded however far the
        client pipelines.
        """
        store = makeStore()
        server, _ = makeServer(store)
        data = random.Random(2).randbytes(20 * BLOCK_SIZE)
        store.objects["alice/f"] = (data, 0)
        store.holding.add("getObject")
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        reads = [f.readChunk(offset, 32768) for offset in range(0, 64 * 32768, 32768)]
        self.assertEqual(len(store.held), READ_AHEAD + 2)
        while store.held:
            store.release()
        self.assertEqual(b"".join(self.successResultOf(r) for r in reads), data[: 64 * 32768])
        for offset in range(64 * 32768, len(data), 32768):
            self.assertEqual(
                self.successResultOf(f.readChunk(offset, 32768)), data[offset : offset + 32768]
            )
            self.assertLessEqual(len(f._data), READ_AHEAD + 2)
            while store.held:
                store.release()
        self.assertTrue(all(length == BLOCK_SIZE for _, length in store.ranges))
        self.assertEqual(len(store.ranges), 20)

    def test_randomAccess(self) -> None:
        """
        A READ that does not follow the previous one (C{reget}, seeking)
        fetches exactly the bytes asked for; the reads that follow it are
        read ahead again.
        """
        store = makeStore()
        server, _ = makeServer(store)
        data = random.Random(3).randbytes(8 * BLOCK_SIZE)
        store.objects["alice/f"] = (data, 0)
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        offset = 5 * BLOCK_SIZE + 77
        self.assertEqual(
            self.successResultOf(f.readChunk(offset, 1000)), data[offset : offset + 1000]
        )
        self.assertEqual(store.ranges, [(offset, 1000)])
        self.assertEqual(
            self.successResultOf(f.readChunk(offset + 1000, 1000)),
            data[offset + 1000 : offset + 2000],
        )
        self.assertEqual(
            store.ranges[1:],
            [
                (5 * BLOCK_SIZE, BLOCK_SIZE),
                (6 * BLOCK_SIZE, BLOCK_SIZE),
                (7 * BLOCK_SIZE, BLOCK_SIZE),
            ],
        )

    def test_changedDuringDownload(self) -> None:
        """
        A file replaced while it is read fails the next READ with a clear
        failure instead of mixing two versions.
        """
        server, store = makeServer()
        store.objects["alice/f"] = (b"a" * (10 * BLOCK_SIZE), 0)
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.successResultOf(f.readChunk(0, 1000))
        store.objects["alice/f"] = (b"b" * (10 * BLOCK_SIZE), 0)
        e = self.assertStatus(f.readChunk(9 * BLOCK_SIZE, 1000), FX_FAILURE)
        self.assertIn("changed", e.message)

    def test_memory(self) -> None:
        """
        Opening a file for reading reserves its read-ahead from the
        server's memory limit; CLOSE gives it back.
        """
        memory = MemoryLimit(1024 * MiB)
        server, store = makeServer(memory=memory)
        store.objects["alice/f"] = (b"abc", 7)
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.assertEqual(memory.available, 1024 * MiB - downloadReservation())
        attrs = self.successResultOf(f.getAttrs())
        self.assertEqual((attrs["size"], attrs["mtime"]), (3, 7))
        self.assertStatus(f.writeChunk(0, b"x"), FX_OP_UNSUPPORTED)
        self.successResultOf(f.setAttrs({"mtime": 5}))
        self.successResultOf(f.close())
        self.assertEqual(memory.available, 1024 * MiB)
