"""
Tests for L{twisted_s3sftp.ssh.session}: the session channel, the realm and
avatar, and the connection's flow control.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.interfaces import ISFTPServer
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_RESOURCE_SHORTAGE,
)
from twisted.conch.ssh.filetransfer import (
    FXF_CREAT,
    FXF_TRUNC,
    FXF_WRITE,
)
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from twisted_s3sftp.sftp.flow import ChannelWindow, MemoryLimit
from twisted_s3sftp.sftp.server import ISFTPUser, S3SFTPServer
from twisted_s3sftp.ssh.admission import Limits
from twisted_s3sftp.ssh.session import (
    S3Connection,
    S3Realm,
    S3User,
    SFTPSession,
)
from twisted_s3sftp.store.memory import MemoryObjectStore
from twisted_s3sftp.store.parts import MIN_PART_SIZE, MiB, UploadPolicy

PART = MIN_PART_SIZE
POLICY = UploadPolicy(partSize=PART, bufferLimit=32 * MiB, concurrency=2)
WRITE = FXF_WRITE | FXF_CREAT | FXF_TRUNC


class SessionTests(SynchronousTestCase):
    """
    L{SFTPSession} offers the SFTP subsystem and refuses the rest quietly.
    """

    def test_windowOpenedNotifies(self) -> None:
        """
        When the client opens its window, the session sends what it held
        back and only then tells the SFTP protocol it may read on.
        """
        sent: list[bytes] = []

        class Connection:
            def sendData(self, channel: object, data: bytes) -> None:
                sent.append(data)

        session = SFTPSession(conn=Connection())
        session.remoteMaxPacket = 32768
        session.buf = b"held"
        seen: list[bytes] = []
        session.onWritable = lambda: seen.append(session.buf)
        session.addWindowBytes(1000)
        self.assertEqual((sent, seen), ([b"held"], [b""]))

    def queuedSession(self, window: int) -> tuple[SFTPSession, list[Any]]:
        """
        @return: a session with C{window} bytes of the client's window and
            32-byte packets, and the events its connection records.
        """
        events: list[Any] = []

        class Connection:
            def sendData(self, channel: object, data: bytes) -> None:
                events.append(bytes(data))

            def sendRequest(self, channel: object, kind: bytes, data: bytes) -> None:
                events.append(("request", kind))

            def sendClose(self, channel: object) -> None:
                events.append(("close",))

        session = SFTPSession(conn=Connection())
        session.remoteMaxPacket = 32
        session.remoteWindowLeft = window
        session.client = None
        return session, events

    def test_writeBeyondWindow(self) -> None:
        """
        What does not fit the client's window is queued (and counted in
        C{queued} and C{buf}); each window adjustment sends what it allows,
        in packets of at most the client's maximum, in order.
        """
        session, sent = self.queuedSession(40)
        session.write(b"a" * 50)
        session.write(b"b" * 10)
        self.assertEqual(sent, [b"a" * 32, b"a" * 8])
        self.assertEqual((session.queued, session.buf), (20, b"a" * 10 + b"b" * 10))
        session.addWindowBytes(15)
        self.assertEqual(sent[2:], [b"a" * 10 + b"b" * 5])
        session.addWindowBytes(100)
        self.assertEqual(sent[3:], [b"b" * 5])
        self.assertEqual((session.queued, session.remoteWindowLeft), (0, 95))

    def test_closeWaitsForQueue(self) -> None:
        """
        A close asked for while data is queued is sent once the data is
        out, not before.
        """
        session, events = self.queuedSession(0)
        session.write(b"reply")
        session.loseConnection()
        self.assertEqual(events, [])
        session.addWindowBytes(100)
        self.assertEqual(events, [b"reply", ("close",)])

    def test_eofWaitsForQueue(self) -> None:
        """
        The client's EOF while replies are queued reports the exit status
        and closes the channel only after the replies went out.
        """
        session, events = self.queuedSession(0)

        class Client:
            class transport:
                @staticmethod
                def loseConnection() -> None:
                    events.append(("protocol ended",))

        session.client = Client()
        session.write(b"reply")
        session.eofReceived()
        self.assertEqual(events, [("request", b"exit-status"), ("protocol ended",)])
        session.addWindowBytes(100)
        self.assertEqual(events[2:], [b"reply", ("protocol ended",), ("close",)])

    def test_exitStatusAtEOF(self) -> None:
        """
        When the client ends the SFTP subsystem (EOF), the channel reports
        exit status 0 before closing, as sshd does: OpenSSH's C{scp}
        fails otherwise.
        """
        events: list[tuple[Any, ...]] = []

        class Connection:
            def sendRequest(self, channel: object, kind: bytes, data: bytes) -> None:
                events.append(("request", kind, data))

            def sendClose(self, channel: object) -> None:
                events.append(("close",))

        session = SFTPSession(conn=Connection())
        session.client = object()
        session.eofReceived()
        self.assertEqual(events, [("request", b"exit-status", b"\0\0\0\0"), ("close",)])

    def test_channelChatterDropped(self) -> None:
        """
        Conch's info events for every channel ("channel open", "remote
        eof", "remote close") do not reach the log; its errors still do.
        """

        class Connection:
            def sendClose(self, channel: object) -> None:
                pass

        session = SFTPSession(conn=Connection())
        with capturedLogs() as events:
            session.channelOpen(b"")
            session.eofReceived()
            session.closeReceived()
        self.assertEqual(events, [])
        with capturedLogs() as events:
            session.openFailed(ValueError("refused"))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])

    def test_refused(self) -> None:
        """
        C{env}, C{pty-req}, C{window-change}, C{shell}, C{exec},
        C{x11-req}, agent forwarding and any subsystem but C{sftp} are
        refused without adapting the avatar (which would log a traceback).
        """
        session = SFTPSession()
        for request in [
            "env",
            "pty_req",
            "window_change",
            "shell",
            "exec",
            "x11_req",
            "auth_agent_req_openssh_com",
        ]:
            self.assertEqual(getattr(session, f"request_{request}")(b""), 0)
        self.assertEqual(session.request_subsystem(NS(b"sftp-but-not")), 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_subsystems(self) -> None:
        """
        The only subsystem is C{sftp}, and no channel type but C{session}.
        """
        user = S3User(
            "alice", "alice/", MemoryObjectStore(), POLICY, MemoryLimit(1024 * MiB), Clock()
        )
        self.assertEqual(list(user.subsystemLookup), [b"sftp"])
        self.assertEqual(list(user.channelLookup), [b"session"])


class RealmTests(SynchronousTestCase):
    """
    L{S3Realm} confines each user to their home.
    """

    def test_avatarProvidesSFTPUser(self) -> None:
        """
        The avatar provides L{ISFTPUser}, the interface through which the
        SFTP operations (which must not import the SSH layer) reach it, and
        adapts to C{ISFTPServer} as an L{S3SFTPServer} serving it.
        """
        user = S3User("alice", "alice/", MemoryObjectStore(), POLICY, MemoryLimit(MiB), Clock())
        self.assertTrue(verifyObject(ISFTPUser, user))
        server = ISFTPServer(user)
        self.assertIsInstance(server, S3SFTPServer)
        self.assertIs(server.avatar, user)

    def test_home(self) -> None:
        """
        The avatar's home comes from the template, or from the policy; its
        rights and S3 settings from the policy over the server's; a bare
        username (not a L{Login}) is refused, never given every right.
        """
        from twisted.conch.interfaces import IConchUser

        from twisted_s3sftp.sftp.rights import PRESETS, Rights
        from twisted_s3sftp.ssh.keys import Login
        from twisted_s3sftp.ssh.userpolicy import UserPolicy
        from twisted_s3sftp.store.interfaces import ObjectSettings

        realm = S3Realm(
            MemoryObjectStore(),
            "sftp/{username}/",
            POLICY,
            MemoryLimit(MiB),
            Clock(),
            settings=ObjectSettings("STANDARD_IA", "AES256"),
        )
        interface, user, logout = realm.requestAvatar(Login("bob", UserPolicy()), None, IConchUser)
        self.assertIs(interface, IConchUser)
        self.assertEqual(user.home, "sftp/bob/")
        self.assertEqual(user.rights, Rights())
        logout()
        policy = UserPolicy(
            Rights(PRESETS["drop-box"]), home="in/bob/", settings=ObjectSettings(sse="aws:kms")
        )
        _, user, _ = realm.requestAvatar(Login("bob", policy), None, IConchUser)
        self.assertEqual((user.home, user.rights.describe()), ("in/bob/", "drop-box"))
        self.assertEqual(user.settings, ObjectSettings("STANDARD_IA", "aws:kms"))
        self.assertRaises(NotImplementedError, realm.requestAvatar, b"bob", None, IConchUser)


class FakeChannel:
    """
    A channel as L{S3Connection} sees it.
    """

    localMaxPacket = 32768

    def __init__(self, window: ChannelWindow | None) -> None:
        if window is not None:
            self.window = window
        self.localWindowLeft = window.window if window else 100
        self.localWindowSize = self.localWindowLeft
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class ConnectionTests(SynchronousTestCase):
    """
    L{S3Connection} leaves the window of SFTP channels to their
    L{ChannelWindow}.
    """

    def setUp(self) -> None:
        self.connection = S3Connection()
        self.disconnects: list[int] = []
        self.adjusted: list[Any] = []

        self.packets: list[tuple[int, bytes]] = []

        class Factory:
            limits = Limits(maxChannels=2)

        class Transport:
            factory = Factory()

            def sendDisconnect(transport, reason: int, description: bytes) -> None:
                self.disconnects.append(reason)

            def sendPacket(transport, kind: int, payload: bytes) -> None:
                self.packets.append((kind, payload))

        self.connection.transport = Transport()
        self.connection.adjustWindow = lambda channel, n: self.adjusted.append(n)  # type: ignore[method-assign]

    def test_noAutomaticCredit(self) -> None:
        """
        Data on a windowed channel is delivered and counted, and no window
        is granted back on arrival.
        """
        window = ChannelWindow(1000)
        channel = FakeChannel(window)
        self.connection.channels[0] = channel
        self.connection.ssh_CHANNEL_DATA(struct.pack(">L", 0) + NS(b"x" * 900))
        self.assertEqual(channel.received, [b"x" * 900])
        self.assertEqual((window.held, window.window, channel.localWindowLeft), (900, 100, 100))
        self.assertEqual(self.adjusted, [])

    def test_windowExceeded(self) -> None:
        """
        A client that sends more than its window is disconnected.
        """
        channel = FakeChannel(ChannelWindow(1000))
        self.connection.channels[0] = channel
        self.connection.ssh_CHANNEL_DATA(struct.pack(">L", 0) + NS(b"x" * 1001))
        self.assertEqual(channel.received, [])
        self.assertEqual(len(self.disconnects), 1)

    def channelOpen(self, kind: bytes, sender: int) -> None:
        """
        Receive a CHANNEL_OPEN of type C{kind}.
        """
        self.connection.ssh_CHANNEL_OPEN(NS(kind) + struct.pack(">3L", sender, 65536, 32768))

    def test_onlySessions(self) -> None:
        """
        Channels other than C{session} (TCP forwarding, X11, agent) are
        refused as prohibited, without a traceback in the log.
        """
        for sender, kind in enumerate([b"direct-tcpip", b"x11", b"auth-agent@openssh.com"]):
            self.channelOpen(kind, sender)
            ((packetType, payload),) = self.packets[-1:]
            self.assertEqual(packetType, MSG_CHANNEL_OPEN_FAILURE)
            self.assertEqual(
                struct.unpack(">2L", payload[:8]), (sender, OPEN_ADMINISTRATIVELY_PROHIBITED)
            )
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.connection.channels, {})

    def test_channelCap(self) -> None:
        """
        A connection holds at most C{maxChannels} channels; one more is
        refused for lack of resources.
        """
        self.connection.channels = {0: object(), 1: object()}
        self.channelOpen(b"session", 7)
        ((packetType, payload),) = self.packets
        self.assertEqual(packetType, MSG_CHANNEL_OPEN_FAILURE)
        self.assertEqual(struct.unpack(">2L", payload[:8]), (7, OPEN_RESOURCE_SHORTAGE))
