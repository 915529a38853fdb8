"""
The SSH session: the connection service, the session channel, the realm and
the avatar, each a small subclass that fixes one thing Conch gets wrong for
this server (see C{conch-pitfalls.md}).

  - L{SFTPSession}: the C{sftp} subsystem, and C{exec} only for the hash
    commands of L{twisted_s3sftp.ssh.commands} (answered from the stored
    digests, L{twisted_s3sftp.ssh.hashexec}); C{env}, C{shell}, any other
    command, C{pty-req}, C{x11-req}, agent forwarding and other subsystems
    are refused quietly; the channel reports exit status 0 when the client
    ends it.
  - L{S3Connection}: SFTP channels are credited back only as their bytes
    leave memory; at most C{Limits.maxChannels} channels per connection,
    and only C{session} channels (no forwarding), refused quietly.

  - L{S3User}, L{S3Realm}: a logged-in user with their home, rights and
    object settings (the policy they logged in with, which holds for the
    whole session), adapted to C{ISFTPServer} as an
    L{twisted_s3sftp.sftp.server.S3SFTPServer}.

The factory and transport (admission, crypto policy, login grace) are in
L{twisted_s3sftp.ssh.transport}; the SFTP protocol the C{sftp} subsystem
runs is L{twisted_s3sftp.sftp.protocol.S3FileTransferServer}.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser, ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_RESOURCE_SHORTAGE,
    SSHConnection,
)
from twisted.conch.ssh.session import SSHSession
from twisted.conch.ssh.transport import DISCONNECT_PROTOCOL_ERROR
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from ..ops.logformat import quietObserver
from ..sftp.flow import BASE_WINDOW, ChannelWindow, MemoryLimit
from ..sftp.parked import ParkedUploads, ResumeCaps
from ..sftp.paths import homePrefix
from ..sftp.protocol import S3FileTransferServer
from ..sftp.rights import OwnFiles, Rights
from ..sftp.server import ISFTPUser, S3SFTPServer
from ..sftp.upload import ActiveUploads
from ..store.interfaces import IObjectStore, ObjectSettings
from ..store.leases import Leases
from ..store.parts import UploadPolicy
from .commands import parseCommand
from .hashexec import HashRun
from .keys import Login
from .outgoing import OutgoingQueue

if TYPE_CHECKING:
    from .transport import S3ServerTransport

log = Logger()


class S3Connection(SSHConnection):
    """
    The connection service, with flow control for SFTP channels and
    without a debug event for every window adjustment.

    Conch re-opens a channel's window as soon as data arrives.  For a
    channel with a C{window} (an L{SFTPSession}), the window is left to
    that L{ChannelWindow} instead: it is credited back only once the bytes
    have left memory (conch-pitfalls item 5).
    """

    _log = Logger(namespace="twisted.conch.ssh.connection", observer=quietObserver)
    transport: S3ServerTransport

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        # Conch logs a traceback for every refused channel (forwarding
        # included); refuse those here, quietly.
        channelType, rest = getNS(packet)
        (senderChannel,) = struct.unpack(">L", rest[:4])
        if channelType != b"session":
            self._refuseChannel(
                senderChannel, OPEN_ADMINISTRATIVELY_PROHIBITED, b"only SFTP sessions"
            )
            return
        maxChannels = self.transport.factory.limits.maxChannels
        if len(self.channels) >= maxChannels:
            self._refuseChannel(
                senderChannel,
                OPEN_RESOURCE_SHORTAGE,
                b"too many channels (%d)" % (maxChannels,),
            )
            return
        super().ssh_CHANNEL_OPEN(packet)

    def _refuseChannel(self, senderChannel: int, reason: int, text: bytes) -> None:
        self.transport.sendPacket(
            MSG_CHANNEL_OPEN_FAILURE,
            struct.pack(">2L", senderChannel, reason) + NS(text) + NS(b""),
        )

    def ssh_CHANNEL_DATA(self, packet: bytes | memoryview) -> None:
        # The transport passes channel data as a view of the decrypted
        # packet: the SFTP protocol copies it once, when it has a whole
        # message.
        localChannel, dataLength = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(localChannel)
        window = getattr(channel, "window", None)
        if channel is None or window is None:
            super().ssh_CHANNEL_DATA(bytes(packet))
            return
        if dataLength > channel.localMaxPacket or not window.receive(dataLength):
            log.warn("Disconnecting: client sent more than its window allows")
            self.transport.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"channel window exceeded")
            return
        channel.localWindowLeft -= dataLength
        channel.dataReceived(packet[8 : 8 + dataLength])


class SFTPSession(SSHSession):
    """
    A session channel that offers the C{sftp} subsystem and the hash
    commands over C{exec}, and nothing else.

    The stock session adapts the avatar to C{ISession} for these requests,
    which logs a traceback for every OpenSSH client (it sends C{env}).

    Its window starts at L{BASE_WINDOW} and is managed by L{window}
    (see L{S3Connection}): each upload widens it by the memory it reserved.

    What it sends beyond the client's window waits in an
    L{OutgoingQueue}, chunk by chunk, not in Conch's C{buf} (which copies
    the whole backlog at every write and every window adjustment); the
    SFTP protocol bounds it (C{MAX_OUTGOING}) by L{queued}.  C{buf} still
    reads as the backlog, for Conch's C{loseConnection}.

    @ivar window: the channel's flow control.
    @ivar onWritable: called when the client's window lets held-back data
        go out again (set by the SFTP protocol).
    @ivar command: the hash command running on the channel, or L{None}.
    """

    onWritable: Callable[[], None] | None = None
    command: HashRun | None = None

    # Conch logs "channel open", "remote eof", "remote close" and "closed"
    # for every channel: four lines with no user or path for each of
    # rclone's hash commands, a channel each.  The audit trail has the
    # events; keep Conch's warnings only.
    _log = Logger(namespace="twisted.conch.ssh.session", observer=quietObserver)

    _outgoing: OutgoingQueue

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.localWindowSize = self.localWindowLeft = BASE_WINDOW
        self.window = ChannelWindow(BASE_WINDOW, onGrant=self._grant)

    @property
    def buf(self) -> bytes:
        """
        The data held back, joined (Conch's attribute; a copy).
        """
        return self._outgoing.contents()

    @buf.setter
    def buf(self, data: bytes) -> None:
        self._outgoing = OutgoingQueue()
        self._outgoing.append(data)

    @property
    def queued(self) -> int:
        """
        The bytes held back until the client's window opens.
        """
        return len(self._outgoing)

    def write(self, data: bytes) -> None:
        """
        Send C{data} as the client's window allows, in packets of at most
        its maximum packet size; queue the rest.
        """
        self._outgoing.append(data)
        self._sendQueued()

    def _sendQueued(self) -> None:
        outgoing = self._outgoing
        conn = self.conn
        if outgoing and self.remoteWindowLeft > 0 and conn is not None:
            for packet in outgoing.take(self.remoteWindowLeft, self.remoteMaxPacket):
                self.remoteWindowLeft -= len(packet)
                conn.sendData(self, packet)
        if outgoing:
            # As Conch does: the producer pauses until the window opens.
            if self.areWriting:
                self.areWriting = False
                self.stopWriting()
        elif self.closing:
            # A close asked for while data waited.
            self.loseConnection()

    def _grant(self, amount: int) -> None:
        conn = self.conn
        if conn is not None and self in conn.channelsToRemoteChannel:
            conn.adjustWindow(self, amount)

    def request_exec(self, data: bytes) -> int:
        """
        Run a hash command; refuse any other (quietly: a sync tool probes).
        """
        avatar = self.avatar
        if not isinstance(avatar, S3User):
            return 0
        line, _ = getNS(data)
        command = parseCommand(line, avatar.policy.hashes)
        if command is None or self.client is not None or self.command is not None:
            return 0
        server = S3SFTPServer(avatar)
        self.command = HashRun(self, command, server.hashedFile, avatar.username)
        # After the request's reply: an answer found at once must not
        # reach the client (and close the channel) before it; Go's SSH
        # library drops the connection on a reply for a closed channel.
        avatar.clock.callLater(0, self.command.start)
        return 1

    def dataReceived(self, data: bytes) -> None:
        if self.command is not None:
            self.command.dataReceived(data)
            return
        super().dataReceived(data)

    def eofReceived(self) -> None:
        if self.command is not None:
            self.command.eofReceived()
            return
        # Conch closes a subsystem's channel at the client's EOF without an
        # exit status, which OpenSSH's ssh reports as a failure (scp then
        # exits 1).  Report success first, as sshd does when its
        # sftp-server ends.
        if self.session is None and self.client is not None and self.conn is not None:
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", 0))
            if self.queued:
                # Replies still wait for window: the channel closes once
                # they are out (Conch's close would drop them).
                self.loseConnection()
                return
        super().eofReceived()

    def addWindowBytes(self, data: int) -> None:
        # Conch's, with the queue: notified after the held-back data went
        # out, not before (as startWriting would be).
        self.remoteWindowLeft += data
        if not self.areWriting and not self.closing:
            self.areWriting = True
            self.startWriting()
        self._sendQueued()
        if self.extBuf:
            extended, self.extBuf = self.extBuf, []
            for dataType, chunk in extended:
                self.writeExtended(dataType, chunk)
        if self.onWritable is not None:
            self.onWritable()

    def request_subsystem(self, data: bytes) -> int:
        name, _ = getNS(data)
        if name != b"sftp" or self.command is not None:
            return 0
        return super().request_subsystem(data)

    def request_env(self, data: bytes) -> int:
        return 0

    def request_x11_req(self, data: bytes) -> int:
        return 0

    def request_auth_agent_req_openssh_com(self, data: bytes) -> int:
        return 0

    def request_pty_req(self, data: bytes) -> int:
        return 0

    def request_window_change(self, data: bytes) -> int:
        return 0

    def request_shell(self, data: bytes) -> int:
        return 0


@implementer(ISFTPUser)
class S3User(ConchUser):
    """
    A logged-in user: their home in the bucket and how to reach it.

    It provides L{ISFTPUser}, what the SFTP operations need of it.
    Adapting to C{ISFTPServer} (which Conch does once per SFTP channel)
    gives an L{S3SFTPServer} for this user, through C{__conform__} rather
    than a global adapter registry.

    @ivar username: the login name.
    @ivar home: the key prefix the user is confined to.
    @ivar store: the bucket.
    @ivar policy: how uploads use memory and S3.
    @ivar memory: the server's memory limit, shared by all uploads.
    @ivar clock: the time source.
    @ivar uploads: the server's uploads under way.
    @ivar leases: marks multipart uploads as this server's, or L{None}.
    @ivar rights: what the user may do.
    @ivar settings: how the objects the user's uploads create are stored.
    @ivar own: the files this connection stored.
    @ivar parked: the server's parked uploads.
    @ivar parkedKnown: whether this connection has listed its user's
        parked uploads yet.
    @ivar offload: runs a function on a worker thread, returning a
        Deferred of its result (where uploads hash), or L{None}.
    """

    def __init__(
        self,
        username: str,
        home: str,
        store: IObjectStore,
        policy: UploadPolicy,
        memory: MemoryLimit,
        clock: IReactorTime,
        uploads: ActiveUploads | None = None,
        leases: Leases | None = None,
        rights: Rights | None = None,
        settings: ObjectSettings | None = None,
        parked: ParkedUploads | None = None,
        offload: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.username = username
        self.home = home
        self.store = store
        self.policy = policy
        self.memory = memory
        self.clock = clock
        self.uploads = ActiveUploads() if uploads is None else uploads
        self.leases = leases
        self.rights = rights or Rights()
        self.settings = settings or ObjectSettings()
        self.own = OwnFiles()
        self.parked = ParkedUploads() if parked is None else parked
        self.parkedKnown: Deferred[None] | None = None
        self.offload = offload
        self.channelLookup[b"session"] = SFTPSession
        self.subsystemLookup[b"sftp"] = S3FileTransferServer

    def __conform__(self, interface: type[Interface]) -> Any:
        if interface is ISFTPServer:
            return S3SFTPServer(self)
        return None

    def logout(self) -> None:
        log.info("{username} logged out", username=self.username)


@implementer(IRealm)
class S3Realm:
    """
    Makes an L{S3User} for each login.

    @ivar store: the bucket every home lives in.
    @ivar homeTemplate: e.g. C{"{username}/"}.
    @ivar policy: how uploads use memory and S3.
    @ivar memory: the server's memory limit.
    @ivar clock: the time source.
    @ivar uploads: the uploads under way, seen by every session.
    @ivar leases: marks multipart uploads as this server's, or L{None}.
    @ivar settings: the server's S3 object settings, which a user's
        policy may override.
    @ivar parked: the parked uploads, seen by every session.
    @ivar offload: runs a function on a worker thread, returning a
        Deferred of its result (where uploads hash), or L{None}.
    """

    def __init__(
        self,
        store: IObjectStore,
        homeTemplate: str,
        policy: UploadPolicy,
        memory: MemoryLimit,
        clock: IReactorTime,
        leases: Leases | None = None,
        settings: ObjectSettings | None = None,
        caps: ResumeCaps | None = None,
        offload: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.store = store
        self.offload = offload
        self.settings = settings or ObjectSettings()
        self.homeTemplate = homeTemplate
        self.leases = leases
        self.policy = policy
        self.memory = memory
        self.clock = clock
        self.uploads = ActiveUploads()
        self.parked = ParkedUploads(leases, caps or ResumeCaps())

    def requestAvatar(
        self, avatarId: Login | bytes | tuple[()], mind: object, *interfaces: Any
    ) -> Any:
        """
        @param avatarId: the L{Login} the checker admitted; anything else
            (a bare username from another checker) is refused, never given
            every right.
        """
        if IConchUser not in interfaces or not isinstance(avatarId, Login):
            raise NotImplementedError("only SSH users are served")
        username, userPolicy = avatarId.username, avatarId.policy
        user = S3User(
            username,
            userPolicy.home or homePrefix(self.homeTemplate, username),
            self.store,
            self.policy,
            self.memory,
            self.clock,
            self.uploads,
            self.leases,
            userPolicy.rights,
            userPolicy.settings.over(self.settings),
            self.parked,
            self.offload,
        )
        log.info(
            "{username} logged in, home {home}, rights {rights}",
            username=username,
            home=user.home,
            rights=user.rights.describe(),
        )
        return IConchUser, user, user.logout
