"""
Downloads (L{twisted_s3sftp.sftp.download.DownloadFile}) over an in-memory
store: exact bytes and EOF, read-ahead in growing spans within the
memory reserved, ranged reads for random
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
from twisted_s3sftp.sftp.download import BLOCK_SIZE, MAX_SPAN, downloadReservation
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

    def readAll(self, f: Any, store: RecordingStore, data: bytes, pipelined: int = 64) -> list[int]:
        """
        Read C{f} to its end in 32 KiB READs, C{pipelined} at a time,
        releasing the store's held GETs after each batch, checking every
        reply and that the spans held never exceed the reservation.

        @return: the most bytes the download's spans held at any time.
        """
        most = []
        for batch in range(0, len(data), pipelined * 32768):
            reads = [
                (offset, f.readChunk(offset, 32768))
                for offset in range(batch, min(len(data), batch + pipelined * 32768), 32768)
            ]
            most.append(f.held)
            self.assertLessEqual(f.held, f.budget.reserved)
            while store.held:
                store.release()
            for offset, read in reads:
                self.assertEqual(self.successResultOf(read), data[offset : offset + 32768])
        return most

    def test_readAheadGrows(self) -> None:
        """
        A sequential reader gets the file fetched ahead of it in spans
        that double from one block to L{MAX_SPAN} blocks, each byte
        fetched once, the spans held never more than the download
        reserved; blocks it has passed are dropped.
        """
        store = makeStore()
        server, _ = makeServer(store)
        data = random.Random(2).randbytes(24 * BLOCK_SIZE + 999)
        store.objects["alice/f"] = (data, 0)
        store.holding.add("getObject")
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.assertEqual(f.budget.reserved, downloadReservation()[1])
        self.readAll(f, store, data)
        spans = [length // BLOCK_SIZE for _, length in store.ranges]
        self.assertEqual(spans[:5], [1, 2, 4, 8, 8])
        self.assertTrue(all(span <= MAX_SPAN for span in spans))
        self.assertEqual(sum(length for _, length in store.ranges), len(data))
        self.assertLessEqual(len(f._data), 3 * MAX_SPAN)

    def test_readAheadWithinMinimum(self) -> None:
        """
        A download that got only its minimum reservation (memory is
        short) reads ahead in spans of at most a third of it, and holds no
        more than it.
        """
        store = makeStore()
        minimum, _ = downloadReservation()
        server, _ = makeServer(store, memory=MemoryLimit(minimum))
        data = random.Random(4).randbytes(20 * BLOCK_SIZE)
        store.objects["alice/f"] = (data, 0)
        store.holding.add("getObject")
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.assertEqual(f.budget.reserved, minimum)
        self.assertLessEqual(max(self.readAll(f, store, data, pipelined=8)), minimum)
        self.assertTrue(all(length <= 2 * BLOCK_SIZE for _, length in store.ranges))
        self.assertEqual(sum(length for _, length in store.ranges), len(data))

    def test_firstReadSmall(self) -> None:
        """
        The first READ of a file starts with small GETs: a client that
        reads only a file's head does not fetch the rest.
        """
        store = makeStore()
        server, _ = makeServer(store)
        store.objects["alice/f"] = (b"h" * (64 * BLOCK_SIZE), 0)
        f = self.successResultOf(server.openFile(b"f", FXF_READ, {}))
        self.successResultOf(f.readChunk(0, 32768))
        self.assertEqual([length // BLOCK_SIZE for _, length in store.ranges], [1, 2, 4])

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
            [(5 * BLOCK_SIZE, BLOCK_SIZE), (6 * BLOCK_SIZE, 2 * BLOCK_SIZE)],
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
        self.assertEqual(memory.available, 1024 * MiB - downloadReservation()[1])
        attrs = self.successResultOf(f.getAttrs())
        self.assertEqual((attrs["size"], attrs["mtime"]), (3, 7))
        self.assertStatus(f.writeChunk(0, b"x"), FX_OP_UNSUPPORTED)
        self.successResultOf(f.setAttrs({"mtime": 5}))
        self.successResultOf(f.close())
        self.assertEqual(memory.available, 1024 * MiB)
