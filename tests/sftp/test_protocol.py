"""
Tests for L{twisted_s3sftp.sftp.protocol}: Conch's SFTP protocol made safe,
in memory, over a loopback relay to Conch's own SFTP client, and its
crediting of the channel window.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_FSETSTAT,
    FXP_READ,
    FXP_WRITE,
    ClientDirectory,
    ClientFile,
    FileTransferClient,
    SFTPError,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.sftp.extensions import (
    MAX_HANDLES,
    MAX_OUTGOING,
    MAX_READ,
    MAX_SFTP_MESSAGE,
    MAX_WRITE,
)
from twisted_s3sftp.sftp.flow import BASE_WINDOW, ChannelWindow, MemoryLimit
from twisted_s3sftp.sftp.protocol import S3FileTransferServer
from twisted_s3sftp.ssh.session import (
    S3User,
)
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MIN_PART_SIZE, MiB, UploadPolicy

PART = MIN_PART_SIZE
POLICY = UploadPolicy(partSize=PART, bufferLimit=32 * MiB, concurrency=2)
WRITE = FXF_WRITE | FXF_CREAT | FXF_TRUNC


class LoopbackTests(SynchronousTestCase):
    """
    L{S3FileTransferServer} driven by Conch's L{FileTransferClient}.
    """

    def setUp(self) -> None:
        self.store = MemoryObjectStore()
        self.user = S3User("alice", "alice/", self.store, POLICY, MemoryLimit(1024 * MiB), Clock())
        self.server = S3FileTransferServer(avatar=self.user)
        self.client = FileTransferClient()
        self.serverTransport = FakeTransport(self.server, isServer=True)
        self.pump: IOPump = connect(
            self.server,
            self.serverTransport,
            self.client,
            FakeTransport(self.client, isServer=False),
        )

    def result(self, d: Deferred[Any]) -> Any:
        """
        Pump the relay, then return C{d}'s result.
        """
        self.pump.flush()
        return self.successResultOf(d)

    def status(self, d: Deferred[Any]) -> SFTPError:
        """
        Pump the relay, then return the SFTP error C{d} failed with.
        """
        self.pump.flush()
        return self.failureResultOf(d, SFTPError).value

    def test_upload(self) -> None:
        """
        A multipart upload through the protocol arrives intact once CLOSE
        is answered.
        """
        data = bytes(range(256)) * ((PART + 100) // 256)
        f = self.result(self.client.openFile(b"/in/big", WRITE, {}))
        writes = [f.writeChunk(o, data[o : o + 32768]) for o in range(0, len(data), 32768)]
        for w in writes:
            self.result(w)
        self.assertNotIn("alice/in/big", self.store.objects)
        self.result(f.close())
        self.assertEqual(self.store.objects["alice/in/big"][0], data)

    def disconnect(self) -> None:
        """
        Drop the connection the way Conch does, including the repeated
        C{connectionLost} calls seen in practice (twisted#3590).
        """
        self.serverTransport.loseConnection()
        self.pump.flush()
        self.server.connectionLost(Failure(ConnectionLost()))

    def test_disconnectMidUploadAborts(self) -> None:
        """
        A connection lost in the middle of a multipart upload aborts it:
        no object, no multipart upload left, and no completion attempted.
        """
        self.store.holding.add("uploadPart")
        f = self.result(self.client.openFile(b"big", WRITE, {}))
        data = b"x" * (PART + 32768)
        for o in range(0, len(data), 32768):
            f.writeChunk(o, data[o : o + 32768])
        self.pump.flush()
        self.assertEqual(len(self.store.uploads), 1)
        self.disconnect()
        self.store.release()
        self.assertEqual(self.store.objects, {})
        self.assertEqual(self.store.uploads, {})
        self.assertNotIn("completeMultipartUpload", self.store.calls)
        self.assertEqual(self.store.calls.count("abortMultipartUpload"), 1)

    def test_disconnectSmallUploadStoresNothing(self) -> None:
        """
        A small file whose client vanished before CLOSE is never stored.
        """
        f = self.result(self.client.openFile(b"small", WRITE, {}))
        self.result(f.writeChunk(0, b"partial"))
        self.disconnect()
        self.assertEqual(self.store.objects, {})
        self.assertNotIn("putObject", self.store.calls)

    def test_disconnectDuringCloseCompletes(self) -> None:
        """
        A connection lost after the client sent CLOSE does not abort: the
        client sent every byte and asked for the object.
        """
        self.store.holding.add("putObject")
        f = self.result(self.client.openFile(b"small", WRITE, {}))
        self.result(f.writeChunk(0, b"all of it"))
        closing = f.close()
        self.pump.flush()
        self.disconnect()
        self.store.release()
        self.failureResultOf(closing, ConnectionLost)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.store.objects["alice/small"][0], b"all of it")

    def test_readsCounted(self) -> None:
        """
        Each open download and listing counts for the drain until its
        CLOSE, or until the connection is lost; uploads do not count.
        """
        uploads = self.user.uploads
        self.store.objects["alice/f"] = (b"data", 0)
        download = self.result(self.client.openFile(b"f", FXF_READ, {}))
        self.result(self.client.openDirectory(b"."))
        upload = self.result(self.client.openFile(b"g", WRITE, {}))
        self.assertEqual(uploads.reads, 2)
        self.result(download.close())
        self.assertEqual(uploads.reads, 1)
        self.result(upload.close())
        self.assertEqual(uploads.reads, 1)
        self.result(self.client.openFile(b"f", FXF_READ, {}))
        self.assertEqual(uploads.reads, 2)
        self.disconnect()
        self.assertEqual(uploads.reads, 0)
        self.successResultOf(uploads.whenReadsDone())

    def test_unknownHandle(self) -> None:
        """
        WRITE and READ on a handle that does not exist get a failure
        status instead of no reply (twisted#12140).
        """
        self.result(self.client.openFile(b"real", WRITE, {}))
        bogus = ClientFile(self.client, b"no-such-handle")
        self.assertEqual(self.status(bogus.writeChunk(0, b"x")).code, FX_FAILURE)
        self.assertEqual(self.status(bogus.readChunk(0, 10)).code, FX_FAILURE)

    def rawWrite(self, handle: bytes, data: bytes, declared: int, requestId: int) -> Deferred[Any]:
        """
        Send a WRITE whose data field declares C{declared} bytes and is
        followed by C{data}, as a client with its own framing would.

        @return: a Deferred for the reply.
        """
        reply: Deferred[Any] = Deferred()
        self.client.openRequests[requestId] = reply
        message = (
            struct.pack("!BL", FXP_WRITE, requestId)
            + handle
            + struct.pack("!QL", 0, declared)
            + data
        )
        self.server.dataReceived(struct.pack("!L", len(message)) + message)
        return reply

    def test_paddedWrite(self) -> None:
        """
        Bytes after a WRITE's data are ignored, as OpenSSH's sftp-server
        ignores them (rclone's Go library pads WRITEs to its buffer); a
        WRITE declaring more data than its message holds is
        C{BAD_MESSAGE}.
        """
        f = self.result(self.client.openFile(b"padded", WRITE, {}))
        self.result(self.rawWrite(f.handle, b"abc" + b"\0" * 100, 3, 900))
        self.assertEqual(self.status(self.rawWrite(f.handle, b"abc", 50, 901)).code, FX_BAD_MESSAGE)
        self.result(f.close())
        self.assertEqual(self.store.objects["alice/padded"][0], b"abc")

    def test_unknownHandles(self) -> None:
        """
        Every request naming a handle that does not exist (FSTAT,
        FSETSTAT, READDIR, CLOSE, READ, WRITE) gets a failure status, and
        nothing is logged as an error.
        """
        bogus = ClientFile(self.client, b"no-such-handle")
        for name, request in [
            ("fstat", lambda: bogus.getAttrs()),
            # Conch's own ClientFile.setAttrs sends an FSTAT.
            (
                "fsetstat",
                lambda: self.client._sendRequest(
                    FXP_FSETSTAT, bogus.handle + self.client._packAttributes({"size": 1})
                ),
            ),
            ("close", lambda: ClientFile(self.client, b"no-such-handle").close()),
            ("read", lambda: bogus.readChunk(0, 1)),
            ("write", lambda: bogus.writeChunk(0, b"x")),
            ("readdir", lambda: ClientDirectory(self.client, b"no-such-handle").read()),
        ]:
            code = self.status(request()).code
            self.assertIn(code, (FX_FAILURE, FX_NO_SUCH_FILE), name)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_writeLimit(self) -> None:
        """
        A WRITE longer than the 256 KiB announced in C{limits@openssh.com}
        is refused as C{BAD_MESSAGE}, even when its message fits.
        """
        f = self.result(self.client.openFile(b"w", WRITE, {}))
        tooLong = b"x" * (MAX_WRITE + 1)
        self.assertEqual(
            self.status(self.rawWrite(f.handle, tooLong, len(tooLong), 902)).code,
            FX_BAD_MESSAGE,
        )
        self.result(self.rawWrite(f.handle, tooLong[:-1], MAX_WRITE, 903))

    def test_oversizedMessage(self) -> None:
        """
        A message declaring more than 256 KiB closes the channel instead of
        being buffered.
        """
        self.pump.flush()
        self.server.dataReceived(struct.pack("!LBL", 2**30, 6, 1) + b"x" * 100)
        self.assertTrue(self.serverTransport.disconnecting)
        self.assertEqual(self.server.buf, b"")


class ProtocolTests(LoopbackTests):
    """
    What L{S3FileTransferServer} adds to Conch's protocol for issue 4:
    extensions, paged READDIR, the handle cap and bounded READ replies.
    """

    def test_extensionsAnnounced(self) -> None:
        """
        The VERSION reply lists posix-rename, statvfs, limits and check-file.
        """
        announced: dict[bytes, bytes] = {}
        self.client.gotServerVersion = lambda version, ext: announced.update(ext)
        self.client.connectionMade()
        self.pump.flush()
        self.assertEqual(
            set(announced),
            {
                b"posix-rename@openssh.com",
                b"statvfs@openssh.com",
                b"limits@openssh.com",
                b"check-file",
            },
        )

    def test_posixRename(self) -> None:
        """
        C{posix-rename@openssh.com} is answered with a status (not an
        extended reply) and replaces the target; limits and statvfs get
        extended replies.
        """
        self.store.objects["alice/a"] = (b"new", 0)
        self.store.objects["alice/b"] = (b"old", 0)
        self.result(self.client.extendedRequest(b"posix-rename@openssh.com", NS(b"a") + NS(b"b")))
        self.assertEqual(self.store.objects, {"alice/b": (b"new", 0)})
        limits = self.result(self.client.extendedRequest(b"limits@openssh.com", b""))
        self.assertEqual(struct.unpack("!4Q", limits)[3], MAX_HANDLES)
        vfs = self.result(self.client.extendedRequest(b"statvfs@openssh.com", NS(b"/")))
        self.assertEqual(len(vfs), 88)
        self.assertEqual(
            self.status(
                self.client.extendedRequest(b"posix-rename@openssh.com", NS(b"x") + NS(b"y"))
            ).code,
            FX_NO_SUCH_FILE,
        )

    def test_checkFile(self) -> None:
        """
        C{check-file-name} and C{check-file-handle} get ProFTPD's reply (the
        algorithm, then the raw digest), which WinSCP reads; paramiko's bare
        C{check-file} with a handle gets its own (prefixed with
        C{"check-file"}); all from the digests stored with the object (SHA-256
        and MD5 by default), the first algorithm of the client's list that
        is stored.  A range,
        blocks, no stored algorithm, a handle open for writing, a missing
        file and a malformed request are refused.
        """
        data = b"hello world"
        f = self.result(self.client.openFile(b"/f", WRITE, {}))
        self.result(f.writeChunk(0, data))
        self.result(f.close())
        digest = hashlib.sha256(data).digest()
        md5 = hashlib.md5(data).digest()

        def request(target: bytes, algorithms: bytes, *range: int) -> bytes:
            return NS(target) + NS(algorithms) + struct.pack(">QQI", *(range or (0, 0, 0)))

        check = self.client.extendedRequest
        self.assertEqual(
            self.result(check(b"check-file-name", request(b"/f", b"sha1,sha256,md5"))),
            NS(b"sha256") + digest,
        )
        self.assertEqual(
            self.result(check(b"check-file-name", request(b"/f", b"MD5,sha256"))), NS(b"md5") + md5
        )
        r = self.result(self.client.openFile(b"/f", FXF_READ, {}))
        # A ClientFile's handle is kept as an SSH string.
        whole = request(getNS(r.handle)[0], b"sha256", 0, len(data), 0)
        self.assertEqual(self.result(check(b"check-file-handle", whole)), NS(b"sha256") + digest)
        self.assertEqual(
            self.result(check(b"check-file", whole)), NS(b"check-file") + NS(b"sha256") + digest
        )
        for refused in (
            request(b"/f", b"sha256", 1, 0, 0),
            request(b"/f", b"sha256", 0, 0, 4096),
            request(b"/f", b"sha1,crc32"),
        ):
            # Conch's client raises OP_UNSUPPORTED as NotImplementedError.
            d = check(b"check-file-name", refused)
            self.pump.flush()
            self.failureResultOf(d, NotImplementedError)
        w = self.result(self.client.openFile(b"/g", WRITE, {}))
        self.assertEqual(
            self.status(check(b"check-file-handle", request(getNS(w.handle)[0], b"sha256"))).code,
            FX_FAILURE,
        )
        self.assertEqual(
            self.status(check(b"check-file-name", request(b"/nope", b"sha256"))).code,
            FX_NO_SUCH_FILE,
        )
        self.assertEqual(self.status(check(b"check-file-name", b"\0")).code, FX_BAD_MESSAGE)

    def test_readdirPaged(self) -> None:
        """
        A directory of long names larger than one S3 page is listed
        completely, each reply well under 256 KiB, then C{FX_EOF}.
        """
        names = {f"{i:04d}".encode() + b"n" * 400 for i in range(1200)}
        for name in names:
            self.store.objects["alice/d/" + name.decode()] = (b"", 0)
        directory = self.result(self.client.openDirectory(b"d"))
        sent: list[int] = []
        original = self.server.sendPacket
        self.server.sendPacket = lambda kind, data: (sent.append(len(data)), original(kind, data))[
            1
        ]
        seen: list[bytes] = []
        while True:
            outcome: list[Any] = []
            directory.read().addBoth(outcome.append)
            self.pump.flush()
            if isinstance(outcome[0], Failure):
                outcome[0].trap(EOFError)
                break
            seen.extend(name for name, _, _ in outcome[0])
        self.assertEqual(sorted(seen), sorted(names))
        self.assertLess(max(sent), 128 * 1024)

    def test_handleCap(self) -> None:
        """
        A session can hold at most L{MAX_HANDLES} open files and
        directories; one more gets a failure until one is closed.
        """
        handles = [self.result(self.client.openDirectory(b"/")) for _ in range(MAX_HANDLES)]
        e = self.status(self.client.openDirectory(b"/"))
        self.assertEqual(e.code, FX_FAILURE)
        self.assertIn("too many", e.message)
        self.result(handles[0].close())
        self.result(self.client.openDirectory(b"/"))

    def test_readRepliesBounded(self) -> None:
        """
        However many READs a client pipelines, the server handles only as
        many as L{MAX_OUTGOING} bytes of replies at a time; the rest stay
        unread (and uncredited to the window) until replies go out, and
        every READ is answered, capped at L{MAX_READ} bytes.
        """
        data = bytes(range(256)) * (24 * MiB // 256)
        self.store.objects["alice/big"] = (data, 0)
        f = self.result(self.client.openFile(b"big", FXF_READ, {}))
        self.store.holding.add("getObject")
        step = 256 * 1024
        reads = [f.readChunk(o, step) for o in range(0, len(data), step)]
        self.pump.flush()
        self.assertLessEqual(self.server._readingBytes, MAX_OUTGOING + MAX_READ)
        self.assertTrue(self.server.buf)
        for _ in range(1000):
            if all(r.called for r in reads):
                break
            self.store.release()
            self.pump.flush()
        for offset, r in zip(range(0, len(data), step), reads, strict=True):
            self.assertEqual(self.successResultOf(r), data[offset : offset + MAX_READ])
        self.assertEqual(self.server._readingBytes, 0)
        self.assertEqual(self.server._pending, 0)

    def test_reusedRequestIds(self) -> None:
        """
        A client that reuses a request id for READs still pending does not
        unbalance the server's accounting: once every READ is answered,
        nothing counts as under way.
        """
        self.store.objects["alice/f"] = (b"q" * MiB, 0)
        f = self.result(self.client.openFile(b"f", FXF_READ, {}))
        self.client.dataReceived = lambda data: None
        message = struct.pack("!BL", FXP_READ, 77) + f.handle + struct.pack("!QL", 0, 1000)
        for _ in range(3):
            self.server.dataReceived(struct.pack("!L", len(message)) + message)
        self.pump.flush()
        self.assertEqual((self.server._readingBytes, self.server._pending), (0, 0))
        self.assertEqual(self.server._reading, {})

    def test_clientWindowBacklog(self) -> None:
        """
        READ replies held back by the client's own SSH window count
        against L{MAX_OUTGOING}: the server stops reading requests while
        they wait and reads on once the client's window lets them go.
        """
        self.store.objects["alice/f"] = (b"y" * MiB, 0)
        f = self.result(self.client.openFile(b"f", FXF_READ, {}))

        class Backlog:
            buf = b"z" * MAX_OUTGOING

        self.server._session = Backlog()
        read = f.readChunk(0, 1000)
        self.pump.flush()
        self.assertNoResult(read)
        self.assertTrue(self.server.buf)
        Backlog.buf = b""
        self.server._resume()
        self.assertEqual(self.result(read), b"y" * 1000)


def sftpMessage(kind: int, requestId: int, payload: bytes) -> bytes:
    """
    @return: an SFTP message as a client sends it.
    """
    body = struct.pack("!BL", kind, requestId) + payload
    return struct.pack("!L", len(body)) + body


def sftpReplies(data: bytes) -> list[tuple[int, int, bytes]]:
    """
    @return: C{(kind, requestId, payload)} of each SFTP message in C{data}.
    """
    replies = []
    while data:
        (length,) = struct.unpack("!L", data[:4])
        kind, requestId = struct.unpack("!BL", data[4:9])
        replies.append((kind, requestId, data[9 : 4 + length]))
        data = data[4 + length :]
    return replies


class FakeSession:
    """
    The part of an L{SFTPSession} the SFTP protocol uses: its window.
    """

    def __init__(self, window: ChannelWindow) -> None:
        self.window = window


class FlowControlTests(SynchronousTestCase):
    """
    The SFTP protocol credits the channel window only as bytes leave
    memory, so a client that respects its window cannot make the server
    hold more than the window's target, however many writes it pipelines.
    """

    def setUp(self) -> None:
        self.store = MemoryObjectStore()
        self.memory = MemoryLimit(1024 * MiB)
        self.grants: list[int] = []
        self.window = ChannelWindow(BASE_WINDOW, onGrant=self.grants.append)
        user = S3User("alice", "alice/", self.store, POLICY, self.memory, Clock())
        self.server = S3FileTransferServer(avatar=user)
        self.transport = StringTransport()
        self.transport.session = FakeSession(self.window)  # type: ignore[attr-defined]
        self.server.makeConnection(self.transport)
        self.send(sftpMessage(1, 3, b""))  # INIT, version 3
        self.transport.clear()

    def send(self, message: bytes | memoryview) -> bool:
        """
        Send C{message} if the window allows it, as an SSH client would.

        @return: whether it was sent.
        """
        if not self.window.receive(len(message)):
            return False
        self.server.dataReceived(message)
        return True

    def replies(self) -> list[tuple[int, int, bytes]]:
        """
        @return: the replies sent since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return sftpReplies(data)

    def openHandle(self, path: bytes) -> bytes:
        """
        @return: the handle of C{path}, opened for writing.
        """
        self.send(sftpMessage(3, 1, NS(path) + struct.pack("!LL", WRITE, 0)))
        ((kind, _, payload),) = self.replies()
        self.assertEqual(kind, 102)
        return payload[4:]

    def write(self, handle: bytes, requestId: int, offset: int, data: bytes) -> bytes:
        """
        @return: a WRITE message.
        """
        return sftpMessage(6, requestId, NS(handle) + struct.pack("!Q", offset) + NS(data))

    def test_pipeliningHeldToWindow(self) -> None:
        """
        With S3 stalled, a client pipelining 1024 writes of 32 KiB gets no
        further than its window: the server holds at most the target (the
        base window plus the upload's reservation), every write it took is
        answered, and once S3 moves again the window is granted back and
        the file completes intact.
        """
        self.store.holding.add("uploadPart")
        handle = self.openHandle(b"big")
        target = self.window.target
        self.assertEqual(target, BASE_WINDOW + 3 * PART + MiB)
        chunk = b"d" * 32768
        sent = 0
        while sent < 1024 and self.send(self.write(handle, sent, sent * 32768, chunk)):
            sent += 1
            self.assertLessEqual(self.window.held, target)
        self.assertLess(sent, 1024)
        self.assertGreater(sent * 32768, 2 * PART)
        self.assertEqual(len(self.replies()), sent)
        while sent < 1024:
            if not self.send(self.write(handle, sent, sent * 32768, chunk)):
                self.assertTrue(self.store.held, "stalled with nothing in flight")
                self.store.release()
                continue
            sent += 1
            self.assertLessEqual(self.window.held, target)
        self.assertTrue(self.grants)
        self.store.holding.clear()
        self.store.release()
        self.send(sftpMessage(4, 9999, NS(handle)))
        self.assertEqual(self.replies()[-1][0], 101)
        self.assertEqual(self.store.objects["alice/big"][0], chunk * 1024)
        self.assertEqual(self.window.held, 0)
        self.assertEqual(self.window.target, BASE_WINDOW)
        self.assertEqual(self.memory.used, 0)

    def test_messagesSplitAnyhow(self) -> None:
        """
        Messages cut at any point (a byte at a time, SSH-packet-sized
        pieces that straddle messages, views of a larger buffer) are each
        handled once, when their last byte arrives, and in order.
        """
        handle = self.openHandle(b"split")
        data = bytes(range(256)) * 1024
        stream = b"".join(
            self.write(handle, 10 + n, n * 65536, data[n * 65536 : (n + 1) * 65536])
            for n in range(4)
        )
        first = self.write(handle, 9, 0, b"")
        for i in range(len(first)):
            self.assertEqual(self.replies(), [])
            self.assertTrue(self.send(first[i : i + 1]))
        self.assertEqual(self.statusCodes(), [(9, 0)])
        view = memoryview(stream)
        for start in range(0, len(stream), 32768):
            self.assertTrue(self.send(view[start : start + 32768]))
        self.assertEqual(self.statusCodes(), [(10, 0), (11, 0), (12, 0), (13, 0)])
        self.send(sftpMessage(4, 14, NS(handle)))
        self.assertEqual(self.statusCodes(), [(14, 0)])
        self.assertEqual(self.store.objects["alice/split"][0], data)

    def test_openCompletingAfterConnectionLost(self) -> None:
        """
        An OPEN still waiting for memory when the connection is lost
        returns its memory once it is granted: the file is discarded, not
        left open for ever.
        """
        held = self.memory.limit - 1
        self.assertTrue(self.memory.tryReserve(held))
        self.send(sftpMessage(3, 1, NS(b"late") + struct.pack("!LL", WRITE, 0)))
        self.assertEqual(self.replies(), [])
        self.server.connectionLost(Failure(ConnectionLost()))
        self.memory.free(held)
        self.assertEqual(self.memory.used, 0)
        self.assertEqual(self.server.openFiles, {})

    def test_unknownMessage(self) -> None:
        """
        A message type the server does not know gets C{OP_UNSUPPORTED};
        a malformed WRITE gets C{BAD_MESSAGE}; both are credited back.
        """
        self.send(sftpMessage(222, 7, b"whatever"))
        self.send(sftpMessage(6, 8, b"\0\0"))
        replies = self.replies()
        self.assertEqual([(k, r) for k, r, _ in replies], [(101, 7), (101, 8)])
        codes = [struct.unpack("!L", payload[:4])[0] for _, _, payload in replies]
        self.assertEqual(codes, [FX_OP_UNSUPPORTED, FX_BAD_MESSAGE])
        self.assertEqual(self.window.held, 0)
        self.flushLoggedErrors()

    def statusCodes(self) -> list[tuple[int, int]]:
        """
        @return: C{(requestId, code)} of each reply sent since the last
            call, which must all be statuses.
        """
        replies = self.replies()
        self.assertEqual({kind for kind, _, _ in replies} - {101}, set())
        return [(r, struct.unpack("!L", payload[:4])[0]) for _, r, payload in replies]

    def test_closeWithTrailingBytes(self) -> None:
        """
        Bytes after a CLOSE's handle are ignored, as OpenSSH's sftp-server
        ignores them: the upload is stored and its memory returned.
        """
        handle = self.openHandle(b"f")
        self.send(self.write(handle, 2, 0, b"data"))
        self.send(sftpMessage(4, 3, NS(handle) + b"junk"))
        self.assertEqual(self.statusCodes(), [(2, 0), (3, 0)])
        self.assertEqual(self.store.objects["alice/f"][0], b"data")
        self.assertEqual((self.memory.used, self.server.openFiles), (0, {}))

    def test_malformedCloseThenLost(self) -> None:
        """
        A CLOSE too short to name its handle gets C{BAD_MESSAGE} and closes
        nothing; when the connection is then lost, the upload is aborted
        and its memory returned, not kept for ever.
        """
        handle = self.openHandle(b"f")
        self.send(self.write(handle, 2, 0, b"data"))
        self.send(sftpMessage(4, 3, b"\0\0"))
        self.assertEqual(self.statusCodes(), [(2, 0), (3, FX_BAD_MESSAGE)])
        self.assertGreater(self.memory.used, 0)
        self.server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.memory.used, 0)
        self.assertEqual(self.store.objects, {})
        self.flushLoggedErrors()

    def test_failedCloseFreesHandle(self) -> None:
        """
        A CLOSE that fails still frees its handle, so that failed uploads
        do not use up the session's L{MAX_HANDLES}; the handle is then
        unknown.
        """
        for _attempt in range(MAX_HANDLES + 1):
            handle = self.openHandle(b"f")
            self.store.failNext("putObject")
            self.send(self.write(handle, 2, 0, b"data"))
            self.send(sftpMessage(4, 3, NS(handle)))
            self.assertEqual(self.statusCodes(), [(2, 0), (3, FX_FAILURE)])
        self.assertEqual((self.server.openFiles, self.memory.used), ({}, 0))
        self.send(sftpMessage(4, 4, NS(handle)))
        self.assertEqual(self.statusCodes(), [(4, FX_FAILURE)])
        self.assertEqual(self.store.objects, {})

    def test_closeUnderWayKeepsHandle(self) -> None:
        """
        While a CLOSE is storing the object its handle stays counted; a
        second CLOSE fails without disturbing it, and a connection lost
        meanwhile does not abort it.
        """
        self.store.holding.add("putObject")
        handle = self.openHandle(b"f")
        self.send(self.write(handle, 2, 0, b"data"))
        self.send(sftpMessage(4, 3, NS(handle)))
        self.send(sftpMessage(4, 4, NS(handle)))
        self.assertEqual(self.statusCodes(), [(2, 0), (4, FX_FAILURE)])
        self.assertIn(handle, self.server.openFiles)
        self.server.connectionLost(Failure(ConnectionLost()))
        self.store.release()
        self.assertEqual(self.store.objects["alice/f"][0], b"data")
        self.assertEqual(self.memory.used, 0)

    def test_malformedInitKeepsAccounting(self) -> None:
        """
        A malformed INIT is answered with C{BAD_MESSAGE} and, like every
        request, counted until then: the count of requests waiting for
        replies never goes below zero, so L{MAX_PENDING} stays enforced.
        """
        for _requestId in range(5):
            self.send(sftpMessage(1, 3, struct.pack("!L", 99)))
        self.assertEqual(len(self.statusCodes()), 5)
        self.assertEqual(self.server._pending, 0)
        self.flushLoggedErrors()

    def test_nothingReadAfterOversizedMessage(self) -> None:
        """
        Once a message above the limit has closed the channel, nothing
        the client sends after it is handled.
        """
        oversized = struct.pack("!LBL", MAX_SFTP_MESSAGE + 1, 6, 1)
        self.server.dataReceived(oversized + sftpMessage(17, 5, NS(b"/")))
        self.server.dataReceived(sftpMessage(17, 6, NS(b"/")))
        self.assertEqual(self.replies(), [])
        self.assertTrue(self.transport.disconnecting)
