"""
Tests for L{twisted_s3sftp.ssh}: Conch's SFTP protocol, in memory, over a
loopback relay to Conch's own SFTP client.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh.filetransfer import (
    FX_FAILURE,
    FXF_CREAT,
    FXF_TRUNC,
    FXF_WRITE,
    ClientFile,
    FileTransferClient,
    SFTPError,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.memory import MemoryObjectStore
from twisted_s3sftp.ssh import (
    S3FileTransferServer,
    S3Realm,
    S3ServerTransport,
    S3User,
    SFTPSession,
    USER_SIGNATURE_ALGORITHMS,
)
from twisted_s3sftp.upload import MIN_PART_SIZE

PART = MIN_PART_SIZE
WRITE = FXF_WRITE | FXF_CREAT | FXF_TRUNC


class LoopbackTests(SynchronousTestCase):
    """
    L{S3FileTransferServer} driven by Conch's L{FileTransferClient}.
    """

    def setUp(self) -> None:
        self.store = MemoryObjectStore()
        self.user = S3User("alice", "alice/", self.store, PART, Clock())
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

    def test_unknownHandle(self) -> None:
        """
        WRITE and READ on a handle that does not exist get a failure
        status instead of no reply (twisted#12140).
        """
        self.result(self.client.openFile(b"real", WRITE, {}))
        bogus = ClientFile(self.client, b"no-such-handle")
        self.assertEqual(self.status(bogus.writeChunk(0, b"x")).code, FX_FAILURE)
        self.assertEqual(self.status(bogus.readChunk(0, 10)).code, FX_FAILURE)

    def test_oversizedMessage(self) -> None:
        """
        A message declaring more than 256 KiB closes the channel instead of
        being buffered.
        """
        self.pump.flush()
        self.server.dataReceived(struct.pack("!LBL", 2**30, 6, 1) + b"x" * 100)
        self.assertTrue(self.serverTransport.disconnecting)
        self.assertEqual(self.server.buf, b"")


class SessionTests(SynchronousTestCase):
    """
    L{SFTPSession} offers the SFTP subsystem and refuses the rest quietly.
    """

    def test_refused(self) -> None:
        """
        C{env}, C{pty-req}, C{window-change}, C{shell} and C{exec} are
        refused without adapting the avatar (which would log a traceback).
        """
        session = SFTPSession()
        for request in ["env", "pty_req", "window_change", "shell", "exec"]:
            self.assertEqual(getattr(session, f"request_{request}")(b""), 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_subsystems(self) -> None:
        """
        The only subsystem is C{sftp}, and no channel type but C{session}.
        """
        user = S3User("alice", "alice/", MemoryObjectStore(), PART, Clock())
        self.assertEqual(list(user.subsystemLookup), [b"sftp"])
        self.assertEqual(list(user.channelLookup), [b"session"])


class RealmTests(SynchronousTestCase):
    """
    L{S3Realm} confines each user to their home.
    """

    def test_home(self) -> None:
        """
        The avatar's home comes from the template.
        """
        from twisted.conch.interfaces import IConchUser

        realm = S3Realm(MemoryObjectStore(), "sftp/{username}/", PART, Clock())
        interface, user, logout = realm.requestAvatar(b"bob", None, IConchUser)
        self.assertIs(interface, IConchUser)
        self.assertEqual(user.home, "sftp/bob/")
        logout()


class TransportTests(SynchronousTestCase):
    """
    L{S3ServerTransport} advertises user signature algorithms.
    """

    def test_serverSigAlgs(self) -> None:
        """
        C{server-sig-algs} lists the algorithms accepted for user keys,
        whatever the host keys are (twisted#12107).
        """
        sent: list[Any] = []
        transport = S3ServerTransport()
        transport._peerSupportsExtensions = True
        transport.sendPacket = lambda kind, payload: sent.append(payload)  # type: ignore[method-assign]
        transport.sendExtInfo([(b"server-sig-algs", b"ssh-ed25519"), (b"other", b"1")])
        self.assertIn(b",".join(USER_SIGNATURE_ALGORITHMS), sent[0])
        self.assertIn(b"rsa-sha2-256", sent[0])
        self.assertIn(b"other", sent[0])
