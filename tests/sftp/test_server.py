"""
Tests for L{twisted_s3sftp.sftp.server}: the SFTP operations over an in-memory
store.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_OP_UNSUPPORTED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_s3sftp.errors import StoreError
from twisted_s3sftp.sftp.flow import BASE_WINDOW, SLACK, ChannelWindow, MemoryLimit
from twisted_s3sftp.sftp.upload import UploadFile
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.hashes import ResumableMD5, ResumableSHA256
from twisted_s3sftp.store.interfaces import IObjectStore
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MIN_PART_SIZE, MiB, PartLimits, UploadPolicy

PART = MIN_PART_SIZE
WRITE = FXF_WRITE | FXF_CREAT | FXF_TRUNC
POLICY = UploadPolicy(partSize=PART, bufferLimit=32 * MiB, concurrency=2)


def makeServer(
    store: MemoryObjectStore | None = None,
    policy: UploadPolicy = POLICY,
    memory: MemoryLimit | None = None,
    window: ChannelWindow | None = None,
    clock: Clock | None = None,
    offload: Any = None,
) -> tuple[Any, MemoryObjectStore]:
    """
    @param window: the channel window writes are credited to; unmetered if
        not given.
    @param offload: where uploads hash (L{S3User.offload}).
    @return: the C{ISFTPServer} of user C{alice} and its store.
    """
    store = store or MemoryObjectStore()
    memory = memory or MemoryLimit(1024 * MiB)
    user = S3User("alice", "alice/", store, policy, memory, clock or Clock(), offload=offload)
    server = ISFTPServer(user)
    if window is not None:
        server.window = window
    return server, store


class SFTPTestCase(SynchronousTestCase):
    """
    Helpers for driving L{ISFTPServer} operations synchronously.
    """

    def assertStatus(self, d: Deferred[Any], code: int) -> SFTPError:
        """
        Assert C{d} failed with an SFTP status C{code} and an ASCII
        message.
        """
        error = self.failureResultOf(d, SFTPError).value
        self.assertEqual(error.code, code, error.message)
        error.message.encode("ascii")
        return error

    def upload(self, server: Any, path: bytes, data: bytes, chunk: int = 32768) -> UploadFile:
        """
        Upload C{data} to C{path} in C{chunk}-byte writes and close it.
        """
        f = self.successResultOf(server.openFile(path, WRITE, {}))
        for offset in range(0, len(data), chunk):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + chunk]))
        self.successResultOf(f.close())
        return f


class UploadTests(SFTPTestCase):
    """
    Uploads become objects only at a successful CLOSE.
    """

    def test_interfaces(self) -> None:
        """
        The server, its files and both stores provide their interfaces.
        """
        server, store = makeServer()
        self.assertTrue(verifyObject(ISFTPServer, server))
        self.assertTrue(verifyObject(IObjectStore, store))
        f = self.successResultOf(server.openFile(b"x", WRITE, {}))
        self.assertTrue(verifyObject(ISFTPFile, f))
        self.assertEqual(hash(f), hash(f))

    def test_small(self) -> None:
        """
        A file no larger than a part is one PutObject at CLOSE and nothing
        before it.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"/dir/a.txt", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"hello "))
        self.successResultOf(f.writeChunk(6, b"world"))
        self.assertEqual(store.objects, {})
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/dir/a.txt"][0], b"hello world")
        self.assertEqual(store.calls, ["putObject"])

    def test_empty(self) -> None:
        """
        An empty file is a zero-byte object.
        """
        server, store = makeServer()
        self.upload(server, b"empty", b"")
        self.assertEqual(store.objects["alice/empty"][0], b"")

    def test_multipart(self) -> None:
        """
        A file larger than a part is a multipart upload whose parts are
        sent while the client is still writing, completed at CLOSE.
        """
        server, store = makeServer()
        data = bytes(range(256)) * ((3 * PART + 7) // 256) + b"tail"
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, len(data), 65536):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + 65536]))
        self.assertEqual(store.calls.count("uploadPart"), 3)
        self.assertEqual(store.objects, {})
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/big"][0], data)
        self.assertEqual(store.uploads, {})

    def test_partFailureReportedOnWrite(self) -> None:
        """
        When S3 fails a part, the next WRITE fails, the multipart upload is
        aborted, and the CLOSE that follows fails too: no object.
        """
        server, store = makeServer()
        store.failNext("uploadPart")
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        data = b"z" * (PART + 1)
        self.successResultOf(f.writeChunk(0, data))
        store.release()
        e = self.assertStatus(f.writeChunk(len(data), b"more"), FX_FAILURE)
        self.assertIn("upload failed", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})
        self.assertIn("abortMultipartUpload", store.calls)

    def test_putFailureAtClose(self) -> None:
        """
        When S3 refuses the PutObject of a small file, CLOSE fails.
        """
        server, store = makeServer()
        store.failNext("putObject")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})

    def test_unexpectedErrorAtClose(self) -> None:
        """
        An unexpected error while storing (a bug, not an S3 refusal) fails
        the CLOSE with a safe message, is logged, and still ends the
        upload: its memory is returned and it is no longer listed.
        """
        memory = MemoryLimit(1024 * MiB)
        server, store = makeServer(memory=memory)
        store.failNext("completeMultipartUpload", RuntimeError("bug"))
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        error = self.assertStatus(f.close(), FX_FAILURE)
        self.assertIn("internal error", error.message)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(memory.used, 0)
        self.assertIsNone(server.avatar.uploads.get("alice/a"))
        self.assertEqual((store.objects, store.uploads), ({}, {}))

    def test_completeFailure(self) -> None:
        """
        When S3 fails CompleteMultipartUpload, CLOSE fails and the upload
        is aborted.
        """
        server, store = makeServer()
        store.failNext("completeMultipartUpload")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})

    def test_nonSequentialWrite(self) -> None:
        """
        A write at the wrong offset fails with C{OP_UNSUPPORTED}, aborts
        the upload, and CLOSE then fails.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.assertStatus(f.writeChunk(7, b"x"), FX_OP_UNSUPPORTED)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})

    def test_abortIdempotent(self) -> None:
        """
        Aborting twice aborts once; CLOSE after abort fails.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        self.successResultOf(f.abort())
        self.successResultOf(f.abort())
        self.assertEqual(store.calls.count("abortMultipartUpload"), 1)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})

    def test_abortWhilePartInFlight(self) -> None:
        """
        An abort while a part is still being stored waits for it, then
        aborts the multipart upload: nothing is left behind.
        """
        server, store = makeServer()
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"q" * (PART + 5)))
        aborted = f.abort()
        self.assertNoResult(aborted)
        store.release()
        self.successResultOf(aborted)
        self.assertEqual(store.uploads, {})
        self.assertEqual(store.objects, {})

    def test_abortAfterCloseIsNoop(self) -> None:
        """
        Aborting a file that was stored leaves the object alone.
        """
        server, store = makeServer()
        f = self.upload(server, b"a", b"data")
        self.successResultOf(f.abort())
        self.assertEqual(store.objects["alice/a"][0], b"data")

    def test_secondCloseRefused(self) -> None:
        """
        A second CLOSE, or a WRITE, while the first CLOSE is storing the
        object fails, and the first CLOSE still succeeds with the data
        written before it.
        """
        server, store = makeServer()
        store.holding.add("putObject")
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"abc"))
        first = f.close()
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertStatus(f.writeChunk(3, b"late"), FX_FAILURE)
        store.release()
        self.successResultOf(first)
        self.assertEqual(store.objects["alice/a"][0], b"abc")

    def test_openModes(self) -> None:
        """
        Appending to a file that does not exist creates it; a new upload
        opened READ|WRITE|CREAT|TRUNC works, and only an actual read from
        it is refused.
        """
        server, store = makeServer()
        append = FXF_WRITE | FXF_CREAT | FXF_APPEND
        f = self.successResultOf(server.openFile(b"c", append, {}))
        self.successResultOf(f.writeChunk(0, b"new"))
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/c"][0], b"new")
        f = self.successResultOf(server.openFile(b"a", WRITE | FXF_READ, {}))
        self.assertStatus(f.readChunk(0, 10), FX_OP_UNSUPPORTED)
        self.successResultOf(f.writeChunk(0, b"abc"))
        self.successResultOf(f.close())
        self.assertEqual(store.objects["alice/a"][0], b"abc")

    def test_fstatDuringUpload(self) -> None:
        """
        C{fstat} of a file being uploaded reports the bytes received.
        """
        server, store = makeServer()
        f = self.successResultOf(server.openFile(b"a", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"12345"))
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], 5)
        self.successResultOf(f.setAttrs({"permissions": 0o600}))


class EngineTests(SFTPTestCase):
    """
    The upload engine: parallel parts, integrity metadata, memory and
    window accounting.
    """

    def writeAll(self, f: UploadFile, data: bytes, chunk: int = 65536) -> None:
        """
        Write C{data} in order; every write must be answered at once.
        """
        for offset in range(0, len(data), chunk):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + chunk]))

    def test_partsInParallel(self) -> None:
        """
        Up to C{concurrency} parts are in flight at once, never more; the
        rest wait their turn while writes are still answered.
        """
        server, store = makeServer()
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        self.writeAll(f, b"p" * (4 * PART + 1))
        self.assertEqual([op.name for op in store.held], ["uploadPart"] * 2)
        store.release(0)
        self.assertEqual(len(store.held), 2)
        store.release()
        store.release()
        self.assertEqual(store.calls.count("uploadPart"), 4)

    def test_partBuffersReused(self) -> None:
        """
        The buffers of parts S3 has stored go back to the server's pool
        and fill the later parts and the next upload's, which are stored
        intact: with S3 answering at once, one buffer serves them all.
        """
        memory = MemoryLimit(1024 * MiB)
        server, store = makeServer(memory=memory)
        first = random.Random(5).randbytes(3 * PART + 7)
        self.upload(server, b"one", first, chunk=65536)
        self.assertEqual(memory.buffers.idle, PART)
        second = random.Random(6).randbytes(2 * PART + 7)
        self.upload(server, b"two", second, chunk=65536)
        self.assertEqual(store.objects["alice/one"][0], first)
        self.assertEqual(store.objects["alice/two"][0], second)
        self.assertEqual(memory.buffers.idle, PART)

    def test_completionOrder(self) -> None:
        """
        Parts stored in any order complete into the right object, and the
        CLOSE is answered only after S3 completed it.
        """
        server, store = makeServer()
        store.holding.add("uploadPart")
        data = random.Random(5).randbytes(3 * PART + 99)
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        self.writeAll(f, data)
        closing = f.close()
        while store.held:
            store.release(len(store.held) - 1)
        self.successResultOf(closing)
        self.assertEqual(store.objects["alice/big"][0], data)

    def test_hashMetadata(self) -> None:
        """
        The SHA-256 and (by default) the MD5 of the whole file are stored as
        C{x-amz-meta-sha256} (hex) and C{x-amz-meta-md5chksum} (base64, as
        rclone's S3 backend keeps it), for a single PutObject and for a
        multipart upload (recorded with a copy that must still match the
        completed object's ETag), and the saved states of those hashes as
        C{x-amz-meta-sha256-state} and C{x-amz-meta-md5-state} (what an
        append continues from).
        """
        for size in (0, 1000, 2 * PART + 1):
            server, store = makeServer()
            data = random.Random(size).randbytes(size)
            self.upload(server, b"f", data)
            metadata = store.metadata["alice/f"]
            state = metadata.pop("sha256-state")
            md5State = metadata.pop("md5-state")
            expected = hashlib.sha256(data).hexdigest()
            self.assertEqual(
                ResumableSHA256.fromState(base64.b64decode(state)).hexdigest(), expected
            )
            self.assertEqual(
                ResumableMD5.fromState(base64.b64decode(md5State)).hexdigest(),
                hashlib.md5(data).hexdigest(),
            )
            self.assertEqual(
                metadata,
                {
                    "sha256": expected,
                    "md5chksum": base64.b64encode(hashlib.md5(data).digest()).decode(),
                    "uploader": "alice",
                },
            )
        self.assertIn("copyObject", store.calls)

    def test_metadataFailureDeletes(self) -> None:
        """
        If the checksum cannot be recorded, the completed object is deleted
        and CLOSE fails: no object without its hash.
        """
        server, store = makeServer()
        store.failNext("copyObject")
        f = self.successResultOf(server.openFile(b"f", WRITE, {}))
        self.writeAll(f, b"m" * (PART + 1))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.objects, {})
        self.assertEqual(store.uploads, {})

    def test_checksumMismatchNeverCompletes(self) -> None:
        """
        A part S3 refuses for a bad checksum fails the next WRITE and the
        CLOSE: the upload is aborted and never completed.
        """
        server, store = makeServer()
        store.failNext("uploadPart", StoreError("S3 error: BadDigest", "BadDigest"))
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"f", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"c" * (PART + 1)))
        store.release()
        e = self.assertStatus(f.writeChunk(PART + 1, b"c"), FX_FAILURE)
        self.assertIn("BadDigest", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertNotIn("completeMultipartUpload", store.calls)
        self.assertEqual(store.uploads, {})

    def test_windowCreditedAsPartsLeave(self) -> None:
        """
        The bytes of a write are credited back to the channel window only
        once the part holding them is stored; when the upload ends the
        window is back to where it started and its memory is returned.
        """
        memory = MemoryLimit(1024 * MiB)
        # Uncapped: this client writes everything before any credit.
        window = ChannelWindow(BASE_WINDOW, maximum=64 * MiB)
        server, store = makeServer(memory=memory, window=window)
        store.holding.add("uploadPart")
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        reserved = memory.used
        self.assertEqual(reserved, 3 * PART + SLACK)
        self.assertEqual(window.target, BASE_WINDOW + reserved)
        data = b"w" * (2 * PART + 10)
        for offset in range(0, len(data), 65536):
            chunk = data[offset : offset + 65536]
            self.assertTrue(window.receive(len(chunk)))
            self.successResultOf(f.writeChunk(offset, chunk))
        self.assertEqual(window.held, len(data))
        store.release(0)
        self.assertEqual(window.held, len(data) - PART)
        closing = f.close()
        store.release()
        store.release()
        self.successResultOf(closing)
        self.assertEqual(window.held, 0)
        self.assertEqual(window.target, BASE_WINDOW)
        self.assertEqual(memory.used, 0)

    def test_failureReleasesEverything(self) -> None:
        """
        A failed upload credits every byte it held and returns its memory.
        """
        memory = MemoryLimit(1024 * MiB)
        window = ChannelWindow(BASE_WINDOW)
        server, store = makeServer(memory=memory, window=window)
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        window.receive(1000)
        self.successResultOf(f.writeChunk(0, b"x" * 1000))
        window.receive(10)
        self.assertStatus(f.writeChunk(PART * 40, b"y" * 10), FX_OP_UNSUPPORTED)
        self.successResultOf(f.abort())
        self.assertEqual(window.held, 0)
        self.assertEqual(memory.used, 0)

    def test_openWaitsForMemory(self) -> None:
        """
        When the memory limit is reached, an OPEN waits; it proceeds as
        soon as another upload returns its memory.
        """
        clock = Clock()
        memory = MemoryLimit(PART + SLACK)
        server, store = makeServer(memory=memory, clock=clock)
        first = self.successResultOf(server.openFile(b"one", WRITE, {}))
        waiting = server.openFile(b"two", WRITE, {})
        self.assertNoResult(waiting)
        clock.advance(10)
        self.successResultOf(first.writeChunk(0, b"1"))
        self.successResultOf(first.close())
        second = self.successResultOf(waiting)
        self.successResultOf(second.close())
        self.assertEqual(memory.used, 0)

    def test_openTimesOut(self) -> None:
        """
        An OPEN that cannot get memory within the wait fails with a clear
        status, and gives up its place in line.
        """
        clock = Clock()
        memory = MemoryLimit(PART + SLACK)
        server, store = makeServer(memory=memory, clock=clock)
        first = self.successResultOf(server.openFile(b"one", WRITE, {}))
        waiting = server.openFile(b"two", WRITE, {})
        clock.advance(POLICY.memoryWait)
        e = self.assertStatus(waiting, FX_FAILURE)
        self.assertIn("server busy", e.message)
        self.successResultOf(first.close())
        self.assertEqual(memory.used, 0)

    def test_partsGrow(self) -> None:
        """
        With a scale model of S3's limits, parts grow as the upload goes on
        and the object is intact.
        """
        limits = PartLimits(minPartSize=5, maxPartSize=40, maxParts=22)
        policy = UploadPolicy(partSize=5, bufferLimit=SLACK + 15, concurrency=2, limits=limits)
        store = MemoryObjectStore(minPartSize=5)
        server, store = makeServer(store=store, policy=policy)
        data = random.Random(6).randbytes(300)
        self.upload(server, b"g", data, chunk=7)
        self.assertEqual(store.objects["alice/g"][0], data)
        # Parts of 5, 5, 10, 10, 20, 20, 40, ... bytes: 11 full parts make
        # 270 bytes, and a 12th carries the last 30.
        self.assertEqual(store.calls.count("uploadPart"), 12)

    def test_growthNeedsMemory(self) -> None:
        """
        When parts grow past what the upload reserved, it reserves more;
        if the memory limit cannot give it in time, the upload fails with
        a clear status and is aborted.
        """
        clock = Clock()
        limits = PartLimits(minPartSize=5, maxPartSize=40, maxParts=22)
        policy = UploadPolicy(partSize=5, bufferLimit=SLACK + 5, concurrency=2, limits=limits)
        memory = MemoryLimit(SLACK + 10)
        store = MemoryObjectStore(minPartSize=5)
        server, store = makeServer(store=store, policy=policy, memory=memory, clock=clock)
        f = self.successResultOf(server.openFile(b"g", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"a" * 11))
        self.assertEqual(memory.used, SLACK + 10)
        growing = f.writeChunk(11, b"b" * 20)
        self.assertNoResult(growing)
        clock.advance(policy.memoryWait)
        e = self.assertStatus(growing, FX_FAILURE)
        self.assertIn("server busy", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(store.uploads, {})
        self.assertEqual(memory.used, 0)

    def test_abortWhileWaitingToGrow(self) -> None:
        """
        An upload aborted while it waits for memory to grow its parts gives
        back what it held, and the memory granted to it afterwards too.
        """
        clock = Clock()
        limits = PartLimits(minPartSize=5, maxPartSize=40, maxParts=22)
        policy = UploadPolicy(partSize=5, bufferLimit=SLACK + 5, concurrency=2, limits=limits)
        memory = MemoryLimit(2 * SLACK + 15)
        store = MemoryObjectStore(minPartSize=5)
        server, store = makeServer(store=store, policy=policy, memory=memory, clock=clock)
        f = self.successResultOf(server.openFile(b"g", WRITE, {}))
        self.successResultOf(f.writeChunk(0, b"a" * 11))
        other = self.successResultOf(server.openFile(b"h", WRITE, {}))
        self.assertEqual(memory.used, memory.limit)
        waiting = f.writeChunk(11, b"b" * 20)
        self.assertNoResult(waiting)
        self.successResultOf(f.abort())
        self.successResultOf(other.close())
        self.assertEqual(memory.used, 0)
        self.assertStatus(waiting, FX_FAILURE)


class OffloadTests(SFTPTestCase):
    """
    Uploads hash their parts on a worker thread (L{S3User.offload}), in
    file order, and wait for it before reusing a buffer or storing the
    object.
    """

    def setUp(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        def offload(function: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.jobs.append((function, args, d))
            return d

        self.memory = MemoryLimit(1024 * MiB)
        # Uncapped: this client writes everything before any credit.
        self.window = ChannelWindow(BASE_WINDOW, maximum=64 * MiB)
        self.server, self.store = makeServer(
            memory=self.memory, window=self.window, offload=offload
        )

    def write(self, f: UploadFile, data: bytes) -> None:
        """
        Write C{data} in order, as received over the channel.
        """
        for offset in range(0, len(data), 65536):
            chunk = data[offset : offset + 65536]
            self.assertTrue(self.window.receive(len(chunk)))
            self.successResultOf(f.writeChunk(offset, chunk))

    def runJob(self) -> None:
        """
        Run the oldest job.
        """
        function, args, d = self.jobs.pop(0)
        d.callback(function(*args))

    def test_closeWaitsForHashes(self) -> None:
        """
        Each part's bytes are hashed by one job, one at a time in order;
        until its job is done a stored part's buffer is not reused and its
        bytes not credited to the window, and the CLOSE is not answered;
        then the object has the file's SHA-256 and MD5.
        """
        data = random.Random(7).randbytes(2 * PART + 300_000)
        f = self.successResultOf(self.server.openFile(b"big", WRITE, {}))
        self.write(f, data)
        self.assertEqual(len(self.jobs), 1)
        self.assertEqual(self.memory.buffers.idle, 0)
        held = self.window.held
        self.assertGreaterEqual(held, 2 * PART)
        self.runJob()
        self.assertEqual(self.memory.buffers.idle, PART)
        self.assertEqual(self.window.held, held - PART)
        self.assertEqual(len(self.jobs), 1)
        closing = f.close()
        self.assertNoResult(closing)
        while self.jobs:
            self.runJob()
        self.successResultOf(closing)
        metadata = self.store.metadata["alice/big"]
        self.assertEqual(metadata["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(
            metadata["md5chksum"], base64.b64encode(hashlib.md5(data).digest()).decode()
        )

    def test_smallFilesInline(self) -> None:
        """
        A small file is hashed at once, on the reactor thread: no job.
        """
        f = self.successResultOf(self.server.openFile(b"small", WRITE, {}))
        self.write(f, b"x" * 1000)
        self.successResultOf(f.close())
        self.assertEqual(self.jobs, [])
        self.assertEqual(self.store.objects["alice/small"][0], b"x" * 1000)

    def test_hashingFailsSmall(self) -> None:
        """
        A file of one part whose hash job fails is not stored either (its
        digests would be wrong): CLOSE gets C{FX_FAILURE}.
        """
        f = self.successResultOf(self.server.openFile(b"one", WRITE, {}))
        self.write(f, b"z" * 300_000)
        closing = f.close()
        _, _, d = self.jobs.pop(0)
        d.errback(RuntimeError("boom"))
        self.assertStatus(closing, FX_FAILURE)
        self.assertNotIn("alice/one", self.store.objects)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_hashingFails(self) -> None:
        """
        A job that fails (unexpectedly) fails the upload: CLOSE gets
        C{FX_FAILURE}, nothing is stored, and the error is logged.
        """
        f = self.successResultOf(self.server.openFile(b"big", WRITE, {}))
        self.write(f, b"y" * (PART + 1))
        _, _, d = self.jobs.pop(0)
        d.errback(RuntimeError("boom"))
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertNotIn("alice/big", self.store.objects)
        self.assertEqual(self.store.uploads, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
