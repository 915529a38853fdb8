"""
Property-based fuzzing (hypothesis) of the two ways in: SFTP messages on an
authenticated session, and bytes on a connection before login.

For any input: no exception escapes and nothing is logged as an
unexpected error; every request is answered or the channel is closed;
memory stays bounded and is all returned; and a fresh session or login
afterwards still works.

The examples are the same on every run (see C{tests/conftest.py}); set
C{HYPOTHESIS_PROFILE=fuzz} to explore at random for longer.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.filetransfer import (
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.sftp.test_protocol import sftpMessage, sftpReplies
from tests.ssh.test_transport import Harness, hostKey, loginOverLoopback
from twisted_s3sftp.sftp.extensions import MAX_SFTP_MESSAGE
from twisted_s3sftp.sftp.flow import MemoryLimit
from twisted_s3sftp.sftp.protocol import S3FileTransferServer
from twisted_s3sftp.ssh.session import S3User
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MiB, UploadPolicy

#: Request types a client may send (INIT included), and a few it may not.
KINDS = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 200, 0, 2, 101, 255]


def validMessages(handle: bytes) -> list[tuple[int, bytes]]:
    """
    @return: well-formed request payloads (after the request id), to be
        sent as they are or mutated.
    """
    attrs = struct.pack("!L", 0)
    return [
        (3, NS(b"f") + struct.pack("!L", FXF_WRITE | FXF_CREAT | FXF_TRUNC) + attrs),
        (3, NS(b"f") + struct.pack("!L", FXF_READ) + attrs),
        (6, NS(handle) + struct.pack("!Q", 0) + NS(b"data")),
        (5, NS(handle) + struct.pack("!QL", 0, 100)),
        (4, NS(handle)),
        (7, NS(b"f")),
        (8, NS(handle)),
        (9, NS(b"f") + struct.pack("!LLL", 8, 1, 2)),
        (10, NS(handle) + struct.pack("!LQ", 1, 3)),
        (11, NS(b"/")),
        (12, NS(handle)),
        (13, NS(b"f")),
        (14, NS(b"d") + attrs),
        (15, NS(b"d")),
        (16, NS(b".")),
        (17, NS(b"f")),
        (18, NS(b"f") + NS(b"g")),
        (19, NS(b"f")),
        (20, NS(b"f") + NS(b"g")),
        (200, NS(b"posix-rename@openssh.com") + NS(b"f") + NS(b"g")),
        (200, NS(b"statvfs@openssh.com") + NS(b"/")),
        (200, NS(b"limits@openssh.com")),
    ]


@st.composite
def messages(draw: Any, handles: list[bytes]) -> bytes:
    """
    One SFTP message: a valid one, a mutated one (bytes flipped, cut
    short, extended), or random bytes with a plausible header.

    @param handles: handles the session really has open, used as often as
        made-up ones.
    """
    requestId = draw(st.integers(0, 2**32 - 1))
    choice = draw(st.integers(0, 2))
    handle = draw(st.sampled_from([*handles, b"", b"0", b"\xff" * 8]))
    if choice == 0:
        kind, payload = draw(st.sampled_from(validMessages(handle)))
    elif choice == 1:
        kind, payload = draw(st.sampled_from(validMessages(handle)))
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            if data:
                position = draw(st.integers(0, len(data) - 1))
                data[position] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)))
        payload = bytes(data[:cut]) + draw(st.binary(max_size=16))
    else:
        kind = draw(st.sampled_from(KINDS))
        payload = draw(st.binary(max_size=300))
    return sftpMessage(kind, requestId, payload)


@st.composite
def streams(draw: Any, handles: list[bytes]) -> tuple[list[bytes], list[int]]:
    """
    Messages to send, and how to cut the byte stream into reads; now and
    then a raw length field (zero, tiny, or past the limit).
    """
    parts = draw(st.lists(messages(handles), min_size=1, max_size=30))
    if draw(st.booleans()):
        length = draw(st.sampled_from([0, 1, 4, MAX_SFTP_MESSAGE + 1, 2**32 - 1]))
        parts.insert(draw(st.integers(0, len(parts))), struct.pack("!L", length) + b"\x03")
    cuts = draw(st.lists(st.integers(1, 400), max_size=10))
    return parts, cuts


def newSession(
    store: MemoryObjectStore, memory: MemoryLimit
) -> tuple[S3FileTransferServer, StringTransport]:
    """
    @return: an SFTP session of user C{alice} past INIT, and its transport.
    """
    user = S3User(
        "alice",
        "alice/",
        store,
        UploadPolicy(partSize=5 * MiB, bufferLimit=16 * MiB, concurrency=2),
        memory,
        Clock(),
    )
    server = S3FileTransferServer(avatar=user)
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(sftpMessage(1, 3, b""))
    transport.clear()
    return server, transport


def expectedRequests(parts: list[bytes]) -> int | None:
    """
    @return: how many requests the stream holds before any message the
        server must refuse by closing the channel, or L{None} if it holds
        one (then the channel must be closing).
    """
    stream = b"".join(parts)
    count = 0
    position = 0
    while len(stream) - position >= 4:
        (length,) = struct.unpack_from("!L", stream, position)
        if length > MAX_SFTP_MESSAGE or length < 5:
            return None
        if len(stream) - position - 4 < length:
            break
        count += 1
        position += 4 + length
    return count


class SFTPFuzzTests(SynchronousTestCase):
    """
    Random and mutated SFTP messages on an authenticated session.
    """

    @given(st.data())
    def test_messages(self, data: st.DataObject) -> None:
        """
        Whatever a client sends, in whatever chunks, on a session with an
        upload, a download and a directory open: no exception escapes and
        none is logged; each complete request gets exactly one reply (or
        the channel is closed for a bad length); at most one message is
        buffered; every byte of memory is returned when the connection
        ends; and a fresh session then works.
        """
        store = MemoryObjectStore()
        store.objects["alice/existing"] = (b"x" * 5000, 0)
        memory = MemoryLimit(256 * MiB)
        server, transport = newSession(store, memory)
        handles = []
        for kind, payload in [
            (3, NS(b"up") + struct.pack("!LL", FXF_WRITE | FXF_CREAT | FXF_TRUNC, 0)),
            (3, NS(b"existing") + struct.pack("!LL", FXF_READ, 0)),
            (11, NS(b"/")),
        ]:
            server.dataReceived(sftpMessage(kind, 1, payload))
            ((_, _, reply),) = sftpReplies(transport.value())
            transport.clear()
            handles.append(reply[4:])
        parts, cuts = data.draw(streams(handles))
        sent = b"".join(parts)
        position = 0
        for cut in cuts + [len(sent)]:
            server.dataReceived(sent[position : position + cut])
            position += cut
            self.assertLessEqual(len(server.buf), MAX_SFTP_MESSAGE + 4)
            if position >= len(sent):
                break
        expected = expectedRequests(parts)
        replies = sftpReplies(transport.value()) if expected is not None else []
        if expected is None:
            self.assertTrue(transport.disconnecting)
        else:
            self.assertEqual(len(replies), expected)
        self.assertEqual(self.flushLoggedErrors(), [])
        server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(memory.used, 0)
        self.assertEqual(store.uploads, {})
        fresh, freshTransport = newSession(store, memory)
        fresh.dataReceived(
            sftpMessage(
                3, 1, NS(b"after") + struct.pack("!LL", FXF_WRITE | FXF_CREAT | FXF_TRUNC, 0)
            )
        )
        ((kind, _, payload),) = sftpReplies(freshTransport.value())
        self.assertEqual(kind, 102)
        fresh.dataReceived(sftpMessage(6, 2, payload + struct.pack("!Q", 0) + NS(b"ok")))
        fresh.dataReceived(sftpMessage(4, 3, payload))
        self.assertEqual(store.objects["alice/after"][0], b"ok")


def kexInitPacket(lists: list[bytes]) -> bytes:
    """
    @return: a client KEXINIT in the clear, framed as an SSH packet.
    """
    payload = (
        b"\x14" + b"\x00" * 16 + b"".join(NS(names) for names in lists) + b"\x00" + b"\x00" * 4
    )
    padding = 8 - (len(payload) + 5) % 8
    if padding < 4:
        padding += 8
    return struct.pack(">LB", len(payload) + padding + 1, padding) + payload + b"\x00" * padding


@st.composite
def mutatedKexInit(draw: Any) -> bytes:
    """
    A client KEXINIT offering the policy's algorithms, then bytes flipped,
    cut short or extended.
    """
    lists = [
        b"curve25519-sha256,ext-info-c",
        b"ssh-ed25519",
        b"aes128-ctr",
        b"aes128-ctr",
        b"hmac-sha2-256",
        b"hmac-sha2-256",
        b"none",
        b"none",
        b"",
        b"",
    ]
    data = bytearray(kexInitPacket(lists))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


class PreAuthFuzzTests(SynchronousTestCase):
    """
    Random bytes on a connection that has not logged in.
    """

    key = hostKey()

    @given(
        st.booleans(),
        st.one_of(
            st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=8),
            mutatedKexInit().map(lambda packet: [packet]),
        ),
    )
    def test_bytes(self, banner: bool, chunks: list[bytes]) -> None:
        """
        Random bytes or a mutated KEXINIT, with or without a valid version
        line first: no exception escapes and none is logged; the
        transport buffers a bounded amount; the connection stays open or
        is being closed, and closing it frees its place; a fresh
        login then works.
        """
        harness = Harness(self)
        harness.addUser("alice", self.key)
        connected = harness.connect()
        assert connected is not None
        transport, tcp = connected
        if banner:
            transport.dataReceived(b"SSH-2.0-fuzz\r\n")
        for chunk in chunks:
            if tcp.disconnecting:
                break
            transport.dataReceived(chunk)
            self.assertLess(len(transport.buf), 64 * 1024)
        self.assertEqual(self.flushLoggedErrors(), [])
        transport.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.factory.admission.unauthenticated, 0)
        self.assertTrue(loginOverLoopback(harness, self.key, b"alice").loggedIn)
