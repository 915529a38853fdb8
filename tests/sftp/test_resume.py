"""
Tests for resumed uploads (L{twisted_s3sftp.sftp.parked},
L{twisted_s3sftp.store.resume}, the lease records of
L{twisted_s3sftp.store.leases}) over an in-memory store: an interrupted
multipart upload is parked, shown, claimed by one session and continued,
and the whole file's SHA-256 comes out right.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from attrs import evolve
from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FX_OP_UNSUPPORTED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_WRITE,
)
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.sftp.test_namespace import readAll
from tests.sftp.test_server import PART, POLICY, WRITE, SFTPTestCase
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.parked import ParkedUploads, ResumeCaps
from twisted_s3sftp.sftp.upload import ActiveUploads, UploadFile
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.hashes import FileHashes
from twisted_s3sftp.store.leases import Leases, userPrefix
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import Checkpoint, MiB, PartLimits
from twisted_s3sftp.store.resume import ACTIVE, PARKED, LeaseRecord, decodeRecord

PREFIX = ".s3sftp/uploads/"
AGE = 3600.0
TTL = 7200.0
RESUME = FXF_WRITE | FXF_CREAT


def md5(data: bytes) -> str:
    """
    @return: C{data}'s MD5 as C{x-amz-meta-md5chksum} holds it.
    """
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class Bucket:
    """
    One bucket and the servers on it: each server has its own leases and
    parked uploads, as separate processes would.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryObjectStore(now=self.clock.seconds)
        self.uploads: dict[int, ActiveUploads] = {}
        self.offload: Any = None

    def server(self, caps: ResumeCaps | None = None, ttl: float = TTL) -> Any:
        """
        @return: a server's C{ISFTPServer} for a new login of C{alice}.
        """
        leases = Leases(self.store, PREFIX, AGE, self.clock, resumeTtl=ttl, interval=15)
        parked = ParkedUploads(leases, caps or ResumeCaps())
        return self.login(leases, parked)

    def login(self, leases: Leases, parked: ParkedUploads, user: str = "alice") -> Any:
        """
        @return: the C{ISFTPServer} of a new login on the server whose
            leases and parked uploads are given.
        """
        avatar = S3User(
            user,
            "alice/",
            self.store,
            POLICY,
            MemoryLimit(1024 * MiB),
            self.clock,
            uploads=self.uploads.setdefault(id(parked), ActiveUploads()),
            leases=leases,
            parked=parked,
            offload=self.offload,
        )
        return ISFTPServer(avatar)

    def again(self, server: Any) -> Any:
        """
        @return: a new login on the same server as C{server}.
        """
        return self.login(server.avatar.leases, server.avatar.parked)

    def leaseRecords(self) -> list[LeaseRecord]:
        """
        @return: the records of every lease in the bucket.
        """
        return [
            decodeRecord(data)
            for key, (data, _) in sorted(self.store.objects.items())
            if key.startswith(PREFIX)
        ]


DATA = os.urandom(3 * PART + 12345)


class ResumeTests(SFTPTestCase):
    """
    Park, show, claim and continue.
    """

    def setUp(self) -> None:
        self.bucket = Bucket()
        self.store = self.bucket.store

    def interrupted(self, server: Any, upTo: int, path: bytes = b"big") -> UploadFile:
        """
        Upload C{DATA[:upTo]} to C{path}, then lose the connection.
        """
        f = self.successResultOf(server.openFile(path, WRITE, {"mtime": 1234}))
        for offset in range(0, upTo, 65536):
            self.successResultOf(f.writeChunk(offset, DATA[offset : min(upTo, offset + 65536)]))
        self.successResultOf(f.park("connection lost"))
        return f

    def finish(self, f: UploadFile, start: int, data: bytes = DATA) -> None:
        """
        Write C{data} from C{start} and close: the stored object is C{data},
        with its SHA-256 and its MD5 (both carried over every resume).
        """
        for offset in range(start, len(data), 65536):
            self.successResultOf(f.writeChunk(offset, data[offset : offset + 65536]))
        self.successResultOf(f.close())
        stored, _ = self.store.objects["alice/big"]
        self.assertEqual(stored, data)
        self.assertEqual(
            self.store.metadata["alice/big"]["sha256"], hashlib.sha256(data).hexdigest()
        )
        self.assertEqual(self.store.metadata["alice/big"]["md5chksum"], md5(data))

    def test_parkedOnConnectionLoss(self) -> None:
        """
        A multipart upload whose connection is lost after parts were stored
        is parked: no object, the multipart upload kept, its lease parked
        with the hash state at each boundary stored; a STAT and a listing
        on the same server show the bytes stored (whole parts) and the
        time of the last part, not the client's time.
        """
        server = self.bucket.server()
        self.interrupted(server, 2 * PART + 100)
        self.assertNotIn("alice/big", self.store.objects)
        self.assertEqual(len(self.store.uploads), 1)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual(record.state, PARKED)
        self.assertEqual(record.stored, 2 * PART)
        self.assertEqual([c.parts for c in record.checkpoints], [1, 2])
        self.assertEqual(record.mtime, 1234)
        other = self.bucket.again(server)
        attrs = self.successResultOf(other.getAttrs(b"big", False))
        self.assertEqual(attrs["size"], 2 * PART)
        self.assertEqual(attrs["mtime"], int(self.bucket.clock.seconds()))
        listing = self.successResultOf(other.openDirectory(b"/"))
        self.assertEqual(
            [(name, a["size"]) for name, _, a in readAll(self, listing)], [(b"big", 2 * PART)]
        )

    def test_resumeOnAnotherServer(self) -> None:
        """
        A session on another server learns of the parked upload at its
        first lookup (one listing of the user's leases), claims it with an
        OPEN without TRUNC, FSTAT gives the size stored, and writes from
        there complete the same multipart upload: the object is the whole
        file, its SHA-256 that of the whole file, its time the client's.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 100)
        other = self.bucket.server()
        self.assertEqual(self.successResultOf(other.getAttrs(b"big", False))["size"], 2 * PART)
        f = self.successResultOf(other.openFile(b"big", RESUME, {}))
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], 2 * PART)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual(record.state, ACTIVE)
        self.finish(f, 2 * PART)
        self.assertEqual(self.store.metadata["alice/big"]["mtime"], "1234")
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_resumedTwice(self) -> None:
        """
        An upload interrupted twice, on two servers, still ends with the
        whole file's SHA-256.
        """
        self.interrupted(self.bucket.server(), PART + 10)
        second = self.bucket.server()
        f = self.successResultOf(second.openFile(b"big", RESUME, {}))
        for offset in range(PART, 3 * PART + 5, 65536):
            self.successResultOf(
                f.writeChunk(offset, DATA[offset : min(3 * PART + 5, offset + 65536)])
            )
        self.successResultOf(f.park("connection lost"))
        (record,) = self.bucket.leaseRecords()
        self.assertEqual(record.stored, 3 * PART)
        third = self.bucket.server()
        self.finish(self.successResultOf(third.openFile(b"big", RESUME, {})), 3 * PART)

    def test_writeOnlyOpen(self) -> None:
        """
        FileZilla's C{reput} and curl 8.17's C{-C -}: OPEN with C{WRITE}
        only (no CREAT), FSTAT for the size, WRITEs from it; the same OPEN of
        a stored file appends to it.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", FXF_WRITE, {}))
        self.finish(f, self.successResultOf(f.getAttrs())["size"])
        server = self.bucket.server()
        self.upload(server, b"small", b"abc")
        f = self.successResultOf(server.openFile(b"small", FXF_WRITE, {}))
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], 3)
        self.successResultOf(f.writeChunk(3, b"def"))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/small"][0], b"abcdef")

    def test_appendFromZero(self) -> None:
        """
        On an C{APPEND} handle, writes from offset 0 count from the size
        stored (C{curl -a}, pkg/sftp); writes from the size stored are
        taken as they are (OpenSSH C{reput}, paramiko C{"ab"}).
        """
        self.interrupted(self.bucket.server(), PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME | FXF_APPEND, {}))
        rest = DATA[PART:]
        for offset in range(0, len(rest), 65536):
            self.successResultOf(f.writeChunk(offset, rest[offset : offset + 65536]))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], DATA)
        self.interrupted(self.bucket.server(), PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME | FXF_APPEND, {}))
        self.finish(f, PART)

    def test_earlierBoundary(self) -> None:
        """
        A first WRITE at an earlier part boundary the lease keeps is
        accepted: the parts after it are sent again.
        """
        self.interrupted(self.bucket.server(), 3 * PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME, {}))
        self.finish(f, PART)

    def test_replaceFromZero(self) -> None:
        """
        A first WRITE at 0 writes the file anew into the same multipart
        upload; the lease stops counting on the old parts at once, so that
        no later resume mixes them with the new bytes; the new file gets
        every configured hash (SHA-256 and MD5), as OpenSSH's C{scp} retry
        writes it.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME, {}))
        other = os.urandom(PART + 9)
        self.successResultOf(f.writeChunk(0, other[:100]))
        (record,) = self.bucket.leaseRecords()
        self.assertEqual((record.checkpoints, record.checksums), ((), b""))
        self.successResultOf(f.writeChunk(100, other[100:]))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], other)
        self.assertEqual(
            self.store.metadata["alice/big"]["sha256"], hashlib.sha256(other).hexdigest()
        )
        self.assertEqual(self.store.metadata["alice/big"]["md5chksum"], md5(other))

    def test_parkWaitsForHashes(self) -> None:
        """
        Parts stored before their hashes are done (hashing on a worker
        thread lags): the running lease gets their checkpoint once they
        are hashed, and a connection lost meanwhile parks the upload once
        the hashes catch up, rather than abort it.
        """
        jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        def offload(function: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            jobs.append((function, args, d))
            return d

        def runJobs() -> None:
            while jobs:
                function, args, d = jobs.pop(0)
                d.callback(function(*args))

        self.bucket.offload = offload
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, 2 * PART + 10, 65536):
            self.successResultOf(
                f.writeChunk(offset, DATA[offset : min(2 * PART + 10, offset + 65536)])
            )
        self.assertEqual(self.store.calls.count("uploadPart"), 2)
        self.assertTrue(jobs)
        function, args, d = jobs.pop(0)
        d.callback(function(*args))
        self.bucket.clock.advance(15)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual([c.parts for c in record.checkpoints], [1])
        parking = f.park("connection lost")
        self.assertNoResult(parking)
        runJobs()
        self.successResultOf(parking)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual((record.state, record.stored), (PARKED, 2 * PART))
        self.bucket.offload = None
        f = self.successResultOf(self.bucket.again(server).openFile(b"big", RESUME, {}))
        self.finish(f, 2 * PART)

    def test_wrongOffsetKeepsUpload(self) -> None:
        """
        A first WRITE at any other offset gets C{OP_UNSUPPORTED} naming the
        size to resume from; the upload is parked again, and a retry at the
        right offset completes it.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", RESUME, {}))
        e = self.assertStatus(f.writeChunk(PART + 7, b"x"), FX_OP_UNSUPPORTED)
        self.assertIn(f"resume from {2 * PART}", e.message)
        self.assertStatus(f.close(), FX_FAILURE)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual((record.state, record.stored), (PARKED, 2 * PART))
        again = self.bucket.again(server)
        self.finish(self.successResultOf(again.openFile(b"big", RESUME, {})), 2 * PART)

    def test_closeWithoutWrite(self) -> None:
        """
        A resumed handle closed with nothing written completes the file
        from the parts stored (a client that had sent everything but the
        CLOSE).
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME, {}))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], DATA[: 2 * PART])
        self.assertEqual(
            self.store.metadata["alice/big"]["sha256"],
            hashlib.sha256(DATA[: 2 * PART]).hexdigest(),
        )

    def test_oneClaimant(self) -> None:
        """
        Of two sessions on two servers opening the parked upload, the
        second is told another session is uploading the file; the first
        completes it.
        """
        self.interrupted(self.bucket.server(), PART + 10)
        first, second = self.bucket.server(), self.bucket.server()
        self.successResultOf(second.getAttrs(b"big", False))
        f = self.successResultOf(first.openFile(b"big", RESUME, {}))
        e = self.assertStatus(second.openFile(b"big", RESUME, {}), FX_FAILURE)
        self.assertIn("another session", e.message)
        self.finish(f, PART)

    def test_liveUploadBusy(self) -> None:
        """
        An OPEN without TRUNC of a file another session is uploading on
        this server (its client may still be sending) is told the file is
        busy; with TRUNC it starts an upload of its own.
        """
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[: PART + 10]))
        other = self.bucket.again(server)
        e = self.assertStatus(other.openFile(b"big", RESUME, {}), FX_FAILURE)
        self.assertIn("another session", e.message)
        self.successResultOf(other.openFile(b"big", WRITE, {}))

    def test_liveUploadNotClaimed(self) -> None:
        """
        A running upload on one server, whose client is slow, is neither
        claimed nor aborted by another server's session, however long after
        that session first listed the user's leases: each rewrite of the
        lease changes it (its ETag), so it never looks stale while its
        server lives.  An OPEN without TRUNC, and a remove, are told the
        file is busy; an OPEN with TRUNC starts an upload of its own (the
        last CLOSE wins).
        """
        a = self.bucket.server()
        f = self.successResultOf(a.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[: 2 * PART + 10]))
        self.bucket.clock.advance(15)
        b = self.bucket.server()
        self.successResultOf(b.getAttrs(b"big", False))
        for _ in range(4):
            self.bucket.clock.advance(15)
        e = self.assertStatus(b.openFile(b"big", RESUME, {}), FX_FAILURE)
        self.assertIn("another session", e.message)
        self.assertStatus(b.removeFile(b"big"), FX_FAILURE)
        g = self.successResultOf(b.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(2 * PART + 10, DATA[2 * PART + 10 :]))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], DATA)
        self.successResultOf(g.writeChunk(0, b"later"))
        self.successResultOf(g.close())
        self.assertEqual(self.store.objects["alice/big"][0], b"later")

    def test_parkAfterTakeover(self) -> None:
        """
        A server whose lease rewrites failed long enough for another to
        take its upload over does not abort that upload when its own
        client then goes: it leaves it to the session that runs it.
        """
        a = self.bucket.server()
        f = self.successResultOf(a.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[: 2 * PART + 10]))
        self.bucket.clock.advance(15)
        for _ in range(4):
            self.store.failNext("putObject")
            self.bucket.clock.advance(15)
        g = self.successResultOf(self.bucket.server().openFile(b"big", RESUME, {}))
        stored = self.successResultOf(g.getAttrs())["size"]
        self.successResultOf(f.park("connection lost"))
        self.assertEqual(len(self.store.uploads), 1)
        self.finish(g, stored)

    def test_listPartsFails(self) -> None:
        """
        A claim whose ListParts fails (not for a gone upload) leaves the
        upload parked as it was: a retry continues it.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        self.store.failNext("listParts")
        server = self.bucket.server()
        self.assertStatus(server.openFile(b"big", RESUME, {}), FX_FAILURE)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual((record.state, record.stored), (PARKED, 2 * PART))
        self.finish(self.successResultOf(server.openFile(b"big", RESUME, {})), 2 * PART)

    def test_parkWriteFails(self) -> None:
        """
        If the parked lease cannot be written, the upload is aborted and
        its lease deleted: no file shows that cannot be resumed.
        """
        a = self.bucket.server()
        f = self.successResultOf(a.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[: 2 * PART + 10]))
        self.bucket.clock.advance(15)
        self.store.failNext("putObject")
        self.successResultOf(f.park("connection lost"))
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))
        self.assertStatus(self.bucket.server().getAttrs(b"big", False), 2)

    def test_replaceFromZeroSmall(self) -> None:
        """
        A resumed upload written anew from 0 and short enough for one
        PutObject aborts the multipart upload it claimed, and ends its
        lease.
        """
        self.interrupted(self.bucket.server(), 2 * PART + 10)
        f = self.successResultOf(self.bucket.server().openFile(b"big", RESUME, {}))
        self.successResultOf(f.writeChunk(0, b"hello"))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], b"hello")
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_truncAndRemoveAbort(self) -> None:
        """
        An OPEN with TRUNC starts a new upload and aborts the parked one; a
        remove aborts it; EXCL is refused as for an existing file.
        """
        server = self.bucket.server()
        self.interrupted(server, PART + 10)
        self.assertStatus(self.bucket.again(server).openFile(b"big", RESUME | FXF_EXCL, {}), 11)
        self.upload(self.bucket.again(server), b"big", b"small")
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))
        self.interrupted(server, PART + 10, b"other")
        self.successResultOf(self.bucket.again(server).removeFile(b"other"))
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))
        self.assertStatus(self.bucket.again(server).getAttrs(b"other", False), 2)

    def test_renameRefused(self) -> None:
        """
        A parked file cannot be renamed, nor renamed onto.
        """
        server = self.bucket.server()
        self.interrupted(server, PART + 10)
        self.upload(server, b"small", b"abc")
        other = self.bucket.again(server)
        self.assertStatus(other.renameFile(b"big", b"x"), FX_FAILURE)
        self.assertStatus(other.posixRename(b"small", b"big"), FX_FAILURE)

    def test_otherUsersUnseen(self) -> None:
        """
        Another user sharing the home sees nothing of alice's parked upload
        and cannot claim it.
        """
        server = self.bucket.server()
        self.interrupted(server, PART + 10)
        bob = self.bucket.login(server.avatar.leases, server.avatar.parked, "bob")
        self.assertStatus(bob.getAttrs(b"big", False), 2)

    def test_smallUploadNotParked(self) -> None:
        """
        An upload that stored no part yet (a single-part file, or the first
        part in flight) is aborted, not parked.
        """
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[:1000]))
        self.successResultOf(f.park("connection lost"))
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_resumeOff(self) -> None:
        """
        With no resume TTL, a lost connection aborts the upload as before.
        """
        self.interrupted(self.bucket.server(ttl=0), PART + 10)
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_ttlSweep(self) -> None:
        """
        The sweep aborts a parked upload once its lease is older than the
        resume TTL, not before (though it is older than the orphan age).
        """
        server = self.bucket.server()
        self.interrupted(server, PART + 10)
        leases = server.avatar.leases
        self.bucket.clock.advance(AGE + 1)
        self.assertEqual(self.successResultOf(leases.sweep()), 0)
        self.bucket.clock.advance(TTL - AGE)
        self.assertEqual(self.successResultOf(leases.sweep()), 1)
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_capAbortsOldest(self) -> None:
        """
        Parking beyond a user's cap aborts their oldest parked upload.
        """
        server = self.bucket.server(ResumeCaps(uploads=2))
        for name in (b"a", b"b", b"c"):
            self.interrupted(server, PART + 10, name)
            self.bucket.clock.advance(1)
        self.assertEqual(sorted(r.key for r in self.bucket.leaseRecords()), ["alice/b", "alice/c"])
        self.assertEqual(len(self.store.uploads), 2)

    def test_burstKept(self) -> None:
        """
        A partner's batch job cut off mid-way (sixty uploads of one user at
        once, under the default caps) keeps every upload parked, and each
        can be resumed.
        """
        limits = PartLimits(minPartSize=1024, maxPartSize=1024 * 1024, maxParts=10_000)
        self.store.minPartSize = 1024
        policy = POLICY.__class__(partSize=1024, bufferLimit=32 * MiB, concurrency=2, limits=limits)
        leases = Leases(self.store, PREFIX, AGE, self.bucket.clock, resumeTtl=TTL)
        parked = ParkedUploads(leases)
        files = {}
        for i in range(60):
            server = self.bucket.login(leases, parked)
            server.avatar.policy = policy
            name = f"f{i}".encode()
            files[name] = os.urandom(3 * 1024 + i)
            f = self.successResultOf(server.openFile(name, WRITE, {}))
            self.successResultOf(f.writeChunk(0, files[name][: 2 * 1024 + 5]))
            self.successResultOf(f.park("connection lost"))
        records = self.bucket.leaseRecords()
        self.assertEqual((len(records), {r.state for r in records}), (60, {PARKED}))
        other = self.bucket.login(leases, ParkedUploads(leases))
        other.avatar.policy = policy
        for name, data in files.items():
            g = self.successResultOf(other.openFile(name, RESUME, {}))
            self.successResultOf(g.writeChunk(2 * 1024, data[2 * 1024 :]))
            self.successResultOf(g.close())
            self.assertEqual(self.store.objects["alice/" + name.decode()][0], data)
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_checkpointsWhileRunning(self) -> None:
        """
        A running upload's lease is rewritten every interval with the hash
        state at the last boundary stored; if its server dies (no park),
        another server may claim it once the lease is stale, and not before.
        """
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, 2 * PART + 10, 65536):
            self.successResultOf(
                f.writeChunk(offset, DATA[offset : min(2 * PART + 10, offset + 65536)])
            )
        self.bucket.clock.advance(15)
        (record,) = self.bucket.leaseRecords()
        self.assertEqual((record.state, record.stored), (ACTIVE, 2 * PART))
        # The server dies: nothing rewrites the lease any more.
        assert f._lease is not None
        f._lease._stop()
        self.bucket.clock.advance(20)
        other = self.bucket.server()
        self.assertEqual(self.successResultOf(other.getAttrs(b"big", False))["size"], 2 * PART)
        e = self.assertStatus(other.openFile(b"big", RESUME, {}), FX_FAILURE)
        self.assertIn("another session", e.message)
        self.bucket.clock.advance(30)
        late = self.bucket.server()
        self.finish(self.successResultOf(late.openFile(b"big", RESUME, {})), 2 * PART)

    def test_takenOverStops(self) -> None:
        """
        A server whose lease was taken over (its rewrite finds the lease
        changed) stops that upload without aborting it.
        """
        server = self.bucket.server()
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        self.successResultOf(f.writeChunk(0, DATA[: PART + 10]))
        (key,) = [k for k in self.store.objects if k.startswith(PREFIX)]
        data, mtime = self.store.objects[key]
        self.store.objects[key] = (data + b" ", mtime)
        self.bucket.clock.advance(15)
        self.assertStatus(f.writeChunk(PART + 10, b"x"), FX_FAILURE)
        self.assertEqual(len(self.store.uploads), 1)

    def test_noSuchUpload(self) -> None:
        """
        A parked upload S3 no longer has (a lifecycle rule aborted it) is
        refused with a reason at OPEN, and forgotten.
        """
        self.interrupted(self.bucket.server(), PART + 10)
        self.store.uploads.clear()
        server = self.bucket.server()
        e = self.assertStatus(server.openFile(b"big", RESUME, {}), FX_FAILURE)
        self.assertIn("expired", e.message)
        self.assertEqual(self.bucket.leaseRecords(), [])

    def test_manyParts(self) -> None:
        """
        A resumed upload of more parts than one ListParts page completes
        with every part (S3 pages at 1,000; the store is asked for all).
        """
        limits = PartLimits(minPartSize=1024, maxPartSize=1024 * 1024, maxParts=10_000)
        self.store.minPartSize = 1024
        policy = POLICY.__class__(partSize=1024, bufferLimit=32 * MiB, concurrency=2, limits=limits)
        data = os.urandom(1100 * 1024 + 7)
        leases = Leases(self.store, PREFIX, AGE, self.bucket.clock, resumeTtl=TTL)
        server = self.bucket.login(leases, ParkedUploads(leases))
        server.avatar.policy = policy
        f = self.successResultOf(server.openFile(b"big", WRITE, {}))
        for offset in range(0, 1050 * 1024 + 1, 4096):
            self.successResultOf(
                f.writeChunk(offset, data[offset : min(1050 * 1024 + 1, offset + 4096)])
            )
        self.successResultOf(f.park("connection lost"))
        leases2 = Leases(self.store, PREFIX, AGE, self.bucket.clock, resumeTtl=TTL)
        other = self.bucket.login(leases2, ParkedUploads(leases2))
        other.avatar.policy = policy
        g = self.successResultOf(other.openFile(b"big", RESUME, {}))
        stored = self.successResultOf(g.getAttrs())["size"]
        self.assertGreater(stored, 1040 * 1024)
        self.finish(g, stored, data)


class RecordTests(SFTPTestCase):
    """
    Lease bodies.
    """

    def test_roundTrip(self) -> None:
        """
        A record survives encoding, as version 2 while its checkpoints
        hold SHA-256 states alone (what servers before MD5 was kept read)
        and 3 once they hold several hashes; an old body decodes as not
        resumable; junk, a bad state among them, is refused.
        """
        alone = FileHashes()
        several = FileHashes(("sha256", "md5"))
        record = LeaseRecord(
            "k",
            "u",
            "alice",
            "/k",
            PARKED,
            PART,
            PartLimits(),
            [Checkpoint(1, PART, alone.state() or b"")],
            checksums=b"\x00\x01\x02\x03",
            mtime=12,
            changed=3.5,
        )
        self.assertEqual((record.checksum(1), record.checksum(2)), ("AAECAw==", None))
        self.assertEqual(decodeRecord(record.encode()), record)
        self.assertEqual(json.loads(record.encode())["v"], 2)
        both = evolve(record, checkpoints=[Checkpoint(1, PART, several.state() or b"")])
        self.assertEqual(json.loads(both.encode())["v"], 3)
        self.assertEqual(decodeRecord(both.encode()), both)
        broken = evolve(record, checkpoints=[Checkpoint(1, PART, b"s" * 104)])
        self.assertRaises(ValueError, decodeRecord, broken.encode())
        old = decodeRecord(b'{"key": "k", "uploadId": "u"}')
        self.assertFalse(old.resumable)
        for junk in (b"x", b"[]", b'{"v": 2, "key": "k", "uploadId": "u"}'):
            self.assertRaises(ValueError, decodeRecord, junk)
        self.assertEqual(userPrefix(PREFIX, "alice"), PREFIX + "YWxpY2U=/")


class AppendTests(SFTPTestCase):
    """
    A WRITE at the end of a stored file appends to it, through a new
    multipart upload that copies the stored parts on the server.
    """

    def setUp(self) -> None:
        self.bucket = Bucket()
        self.store = self.bucket.store
        self.server = self.bucket.server()

    def append(self, stored: int, flags: int, fromZero: bool = False) -> None:
        """
        Store C{DATA[:stored]}, then open it with C{flags} and write the
        rest from its end (from 0 with C{fromZero}): the object is C{DATA}
        with its SHA-256 and MD5, and stays the old one until the CLOSE.
        """
        self.upload(self.server, b"big", DATA[:stored])
        f = self.successResultOf(self.server.openFile(b"big", flags, {}))
        self.assertEqual(self.successResultOf(f.getAttrs())["size"], stored)
        rest = DATA[stored:]
        start = 0 if fromZero else stored
        for offset in range(0, len(rest), 65536):
            self.successResultOf(f.writeChunk(start + offset, rest[offset : offset + 65536]))
        self.assertEqual(self.store.objects["alice/big"][0], DATA[:stored])
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/big"][0], DATA)
        metadata = self.store.metadata["alice/big"]
        self.assertEqual(metadata["sha256"], hashlib.sha256(DATA).hexdigest())
        self.assertEqual(metadata["md5chksum"], md5(DATA))
        self.assertEqual((self.store.uploads, self.bucket.leaseRecords()), ({}, []))

    def test_appendWithoutMD5State(self) -> None:
        """
        A file stored with only the SHA-256 state (by a server before MD5
        was kept) is appended to with its SHA-256 carried on; its MD5 cannot
        be, and is left out rather than stored wrong.
        """
        self.upload(self.server, b"big", DATA[: PART + 9])
        for key in ("md5-state", "md5chksum"):
            del self.store.metadata["alice/big"][key]
        f = self.successResultOf(self.server.openFile(b"big", RESUME, {}))
        self.successResultOf(f.writeChunk(PART + 9, DATA[PART + 9 : 2 * PART]))
        self.successResultOf(f.close())
        metadata = self.store.metadata["alice/big"]
        self.assertEqual(metadata["sha256"], hashlib.sha256(DATA[: 2 * PART]).hexdigest())
        self.assertNotIn("md5chksum", metadata)

    def test_appendSmall(self) -> None:
        """
        A file shorter than a part (OpenSSH C{reput} after a Ctrl-C:
        C{WRITE|CREAT|APPEND} from its size) is read whole and becomes the
        start of the first part; no copy is made.
        """
        self.append(1000, RESUME | FXF_APPEND)
        self.assertNotIn("uploadPartCopy", self.store.calls)

    def test_appendStaysSmall(self) -> None:
        """
        An append whose result still fits one part is one PutObject: no
        multipart upload is created.
        """
        self.upload(self.server, b"s", b"abc")
        f = self.successResultOf(self.server.openFile(b"s", RESUME | FXF_APPEND, {}))
        self.successResultOf(f.writeChunk(3, b"def"))
        self.successResultOf(f.close())
        self.assertEqual(self.store.objects["alice/s"][0], b"abcdef")
        self.assertNotIn("createMultipartUpload", self.store.calls)

    def test_appendLarge(self) -> None:
        """
        A file of several parts (lftp C{put -c}, WinSCP after Cancel:
        C{WRITE|CREAT} from its size) is copied part by part on the server,
        its tail read into the next part.
        """
        self.append(2 * PART + 777, RESUME)
        self.assertEqual(self.store.calls.count("uploadPartCopy"), 2)

    def test_appendFromZero(self) -> None:
        """
        C{curl -a}: C{APPEND}, offsets from 0, counted from the end.
        """
        self.append(PART + 5, RESUME | FXF_APPEND, fromZero=True)

    def test_appendAtPartBoundary(self) -> None:
        """
        A file whose size is a part boundary has no tail to read.
        """
        self.append(2 * PART, RESUME)
        self.assertEqual(self.store.calls.count("getObject"), 0)

    def test_withoutState(self) -> None:
        """
        A file larger than a part stored without the saved hash state (by
        another tool) cannot be appended to: C{OP_UNSUPPORTED} says why,
        and the file is unchanged; a smaller one is read and hashed anew.
        """
        self.store.objects["alice/big"] = (DATA[: PART + 5], 0)
        self.store.metadata["alice/big"] = {}
        f = self.successResultOf(self.server.openFile(b"big", RESUME, {}))
        e = self.assertStatus(f.writeChunk(PART + 5, b"x"), FX_OP_UNSUPPORTED)
        self.assertIn("SHA-256 state", e.message)
        self.assertEqual(self.store.objects["alice/big"][0], DATA[: PART + 5])
        self.store.objects["alice/small"] = (b"abc", 0)
        self.store.metadata["alice/small"] = {}
        f = self.successResultOf(self.server.openFile(b"small", RESUME, {}))
        self.successResultOf(f.writeChunk(3, b"def"))
        self.successResultOf(f.close())
        self.assertEqual(
            self.store.metadata["alice/small"]["sha256"], hashlib.sha256(b"abcdef").hexdigest()
        )

    def test_appendInterruptedAndResumed(self) -> None:
        """
        An append interrupted after parts were stored is parked and resumed
        like any upload, and still ends with the whole file's SHA-256.
        """
        self.upload(self.server, b"big", DATA[: PART + 3])
        f = self.successResultOf(self.server.openFile(b"big", RESUME, {}))
        for offset in range(PART + 3, 3 * PART + 9, 65536):
            self.successResultOf(
                f.writeChunk(offset, DATA[offset : min(3 * PART + 9, offset + 65536)])
            )
        self.successResultOf(f.park("connection lost"))
        (record,) = self.bucket.leaseRecords()
        self.assertEqual(record.stored, 3 * PART)
        other = self.bucket.server()
        g = self.successResultOf(other.openFile(b"big", RESUME, {}))
        for offset in range(3 * PART, len(DATA), 65536):
            self.successResultOf(g.writeChunk(offset, DATA[offset : offset + 65536]))
        self.successResultOf(g.close())
        self.assertEqual(self.store.objects["alice/big"][0], DATA)
        self.assertEqual(
            self.store.metadata["alice/big"]["sha256"], hashlib.sha256(DATA).hexdigest()
        )

    def test_writeIntoStoredRefused(self) -> None:
        """
        Once an append has begun, a WRITE into the stored file's bytes is
        refused: they are the store's to place (its tail is read into the
        upload), and the SHA-256 continues from their saved state.
        """
        size = PART + 100000
        self.upload(self.server, b"big", DATA[:size])
        f = self.successResultOf(self.server.openFile(b"big", RESUME, {}))
        self.successResultOf(f.writeChunk(size, DATA[size : size + 65536]))
        self.assertStatus(f.writeChunk(PART + 10, b"X" * 100), FX_OP_UNSUPPORTED)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(self.store.objects["alice/big"][0], DATA[:size])
        self.assertEqual(self.store.uploads, {})

    def test_changedMeanwhile(self) -> None:
        """
        A file replaced while it is being appended to fails the append (the
        copies name its ETag); the new file stays.
        """
        self.upload(self.server, b"big", DATA[: 2 * PART])
        self.store.holding.add("uploadPartCopy")
        f = self.successResultOf(self.server.openFile(b"big", RESUME, {}))
        self.successResultOf(f.writeChunk(2 * PART, b"more"))
        self.store.objects["alice/big"] = (b"replaced", 0)
        self.store.holding.clear()
        while self.store.held:
            self.store.release(0)
        self.assertStatus(f.close(), FX_FAILURE)
        self.assertEqual(self.store.objects["alice/big"][0], b"replaced")
        self.assertEqual(self.store.uploads, {})
