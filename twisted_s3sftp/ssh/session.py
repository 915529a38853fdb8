"""
The Conch glue: SSH factory, transport, realm, avatar, session and the SFTP
subsystem, each a small subclass that fixes one thing Conch gets wrong for
this server (see C{conch-pitfalls.md}).

  - L{S3FileTransferServer}: a lost connection aborts open uploads instead
    of closing them (Conch calls the same C{close()} for both); requests on
    an unknown handle get a status instead of silence; SFTP messages above
    256 KiB close the channel; READDIR is served a page at a time in
    byte-bounded batches; C{posix-rename@openssh.com} is answered with a
    status; the limits of L{twisted_s3sftp.protocol} (open handles,
    requests waiting, READ replies under way) are enforced; per-packet log
    chatter is dropped.
  - L{SFTPSession}: only the C{sftp} subsystem; C{env}, C{shell}, C{exec},
    C{pty-req}, C{x11-req}, agent forwarding and other subsystems are
    refused quietly; the channel reports exit status 0 when the client
    ends it.
  - L{S3Connection}: SFTP channels are credited back only as their bytes
    leave memory; at most C{Limits.maxChannels} channels per connection,
    and only C{session} channels (no forwarding), refused quietly.

The factory and transport (admission, crypto policy, login grace) are in
L{twisted_s3sftp.transport}.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser, ISFTPServer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_RESOURCE_SHORTAGE,
    SSHConnection,
)
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_OK,
    FX_OP_UNSUPPORTED,
    FXP_ATTRS,
    FXP_DATA,
    FXP_EXTENDED_REPLY,
    FXP_HANDLE,
    FXP_NAME,
    FXP_STATUS,
    FXP_VERSION,
    FXP_WRITE,
    FileTransferServer,
)
from twisted.conch.ssh.transport import DISCONNECT_PROTOCOL_ERROR
from twisted.conch.ssh.session import SSHSession
from twisted.cred.portal import IRealm
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from .flow import BASE_WINDOW, ChannelWindow, FreeWindow, MemoryLimit
from .interfaces import IObjectStore
from .paths import homePrefix
from .protocol import (
    MAX_HANDLES,
    MAX_OUTGOING,
    MAX_PENDING,
    MAX_READ,
    MAX_SFTP_MESSAGE,
    MAX_WRITE,
)
from .sftp import S3SFTPServer
from .upload import UploadPolicy
from .sweep import Leases
from .uploading import ActiveUploads, UploadFile

log = Logger()

#: The replies that answer a request (each request, INIT included, gets
#: exactly one).
_REPLIES = frozenset(
    (
        FXP_VERSION,
        FXP_STATUS,
        FXP_HANDLE,
        FXP_DATA,
        FXP_NAME,
        FXP_ATTRS,
        FXP_EXTENDED_REPLY,
    )
)

# Conch logs every SFTP packet at info level; a log event per packet costs
# a large share of upload throughput (testbed.md).  Keep its warnings only.
_quietObserver = FilteringLogObserver(
    globalLogPublisher,
    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
)


class S3FileTransferServer(FileTransferServer):
    """
    Conch's SFTP server protocol, made safe for uploads that must be all or
    nothing.
    """

    _log = Logger(namespace="twisted.conch.ssh.filetransfer", observer=_quietObserver)
    _lost = False
    _refused = False

    _window: ChannelWindow | FreeWindow | None = None
    _owned = 0
    _pending = 0
    _readingBytes = 0
    _dispatching = False
    _paused = False
    _session: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # The transport is the session's process protocol; its session
        # keeps the channel window the writes are credited to.
        self._session = getattr(self.transport, "session", None)
        self._window = getattr(self._session, "window", None) or FreeWindow()
        self.client.window = self._window
        # READ request id -> the lengths asked for under it (a list, in
        # case a client reuses an id while a READ is pending).
        self._reading: dict[bytes, list[int]] = {}
        # Handles whose CLOSE is under way: the connection's loss must not
        # abort them, and they count against the handle cap until done.
        self._closing: set[bytes] = set()
        if self._session is not None:
            self._session.onWritable = self._resume

    def dataReceived(self, data: bytes) -> None:
        if self._lost or self._refused:
            return
        self.buf = self.buf + data if self.buf else data
        self._process()

    def _process(self) -> None:
        """
        Handle the complete messages received, unless too many requests
        wait for replies or too many READ replies are under way
        (L{MAX_PENDING}, L{MAX_OUTGOING}).  Messages left unread are not
        credited to the channel window, which stops the client; reading
        resumes (L{_resume}) as replies go out.
        """
        if self._dispatching or self._lost or self._refused:
            return
        self._dispatching = True
        self._paused = False
        try:
            buf = self.buf
            position = 0
            while len(buf) - position >= 4 and not self._lost:
                if self._congested():
                    self._paused = True
                    break
                (length,) = struct.unpack_from("!L", buf, position)
                if length > MAX_SFTP_MESSAGE or length < 5:
                    log.warn(
                        "Closing SFTP channel: client sent a {length}-byte message",
                        length=length,
                    )
                    # Nothing after it is read: its end is unknown.
                    self._refused = True
                    self.buf = buf = b""
                    position = 0
                    self.transport.loseConnection()
                    break
                end = position + 4 + length
                if len(buf) < end:
                    break
                self._dispatch(buf[position + 4], buf, position + 5, end)
                position = end
            if position:
                self.buf = buf[position:]
        finally:
            self._dispatching = False

    def _resume(self) -> None:
        """
        A reply went out, or the client's window opened: read on if
        reading was paused.
        """
        if self._paused:
            self._process()

    def _congested(self) -> bool:
        backlog = len(getattr(self._session, "buf", b""))
        return (
            self._pending >= MAX_PENDING
            or self._readingBytes + backlog >= MAX_OUTGOING
        )

    def _dispatch(self, kind: int, buf: bytes, start: int, end: int) -> None:
        """
        Handle one SFTP message, C{buf[start:end]} after its type byte, and
        credit the channel window with its bytes, except the data of a
        WRITE its upload has taken (the upload credits those).
        """
        self._owned = 0
        self._pending += 1
        requestId = buf[start : start + 4]
        packetType = self.packetTypes.get(kind)
        handler = getattr(self, f"packet_{packetType}", None) if packetType else None
        try:
            if handler is None:
                self._sendStatus(requestId, FX_OP_UNSUPPORTED, b"unsupported request")
            elif kind == FXP_WRITE:
                self._write(memoryview(buf)[start:end])
            else:
                handler(buf[start:end])
        except Exception as e:
            log.warn(
                "Malformed SFTP {packetType} message: {error}",
                packetType=packetType,
                error=repr(e),
            )
            self._sendStatus(requestId, FX_BAD_MESSAGE, b"malformed message")
        assert self._window is not None
        self._window.credit(4 + end - start + 1 - self._owned)

    def _write(self, message: memoryview) -> None:
        """
        Handle a WRITE without copying its data more than once.
        """
        requestId = bytes(message[:4])
        (handleLength,) = struct.unpack_from("!L", message, 4)
        handle = bytes(message[8 : 8 + handleLength])
        offset, dataLength = struct.unpack_from("!QL", message, 8 + handleLength)
        data = message[20 + handleLength :]
        if dataLength > MAX_WRITE:
            raise ValueError(f"WRITE of {dataLength} bytes exceeds {MAX_WRITE}")
        if len(data) < dataLength:
            raise ValueError(
                f"WRITE data length {dataLength} exceeds the message"
                f" ({len(data)} bytes left)"
            )
        # Bytes after the data are ignored, as OpenSSH's sftp-server does:
        # the Go SFTP library (rclone 1.60) sends WRITEs padded to its
        # buffer size.
        data = data[:dataLength]
        fileObj = self.openFiles.get(handle)
        if fileObj is None:
            self._ebWrite(Failure(KeyError(handle)), requestId)
            return
        if isinstance(fileObj, UploadFile):
            # The upload copies the data before it returns and credits it
            # to the window once the bytes leave memory.
            self._owned = dataLength
        else:
            data = bytes(data)
        d = maybeDeferred(fileObj.writeChunk, offset, data)
        d.addCallback(self._cbStatus, requestId, b"write succeeded")
        d.addErrback(self._ebStatus, requestId, b"write failed")

    def packet_OPEN(self, data: bytes) -> None:
        if self._handlesFull(data[:4]):
            return
        super().packet_OPEN(data)

    def packet_OPENDIR(self, data: bytes) -> None:
        if self._handlesFull(data[:4]):
            return
        super().packet_OPENDIR(data)

    def _handlesFull(self, requestId: bytes) -> bool:
        if len(self.openFiles) + len(self.openDirs) < MAX_HANDLES:
            return False
        self._sendStatus(
            requestId, FX_FAILURE, b"too many open files (%d)" % (MAX_HANDLES,)
        )
        return True

    def _cbOpenFile(self, fileObj: Any, requestId: bytes) -> None:
        # An OPEN may finish (after waiting for memory) once the connection
        # is gone: nobody can write or close that file, so discard it now
        # rather than keep its memory reserved for ever.  The handle cap is
        # checked again: OPENs may have been pipelined.
        if self._lost or self._handlesFull(requestId):
            abort = getattr(fileObj, "abort", None)
            if abort is not None:
                abort(
                    "connection lost before the file was opened"
                    if self._lost
                    else "too many open files"
                )
            return
        super()._cbOpenFile(fileObj, requestId)

    def _cbOpenDirectory(self, dirObj: Any, requestId: bytes) -> None:
        if self._lost or self._handlesFull(requestId):
            dirObj.close()
            return
        super()._cbOpenDirectory(dirObj, requestId)

    def packet_READ(self, data: bytes) -> None:
        handle, rest = getNS(data[4:])
        (length,) = struct.unpack_from("!L", rest, 8)
        length = min(length, MAX_READ)
        self._reading.setdefault(data[:4], []).append(length)
        self._readingBytes += length
        super().packet_READ(data)

    def packet_READDIR(self, data: bytes) -> None:
        requestId = data[:4]
        handle, _ = getNS(data[4:])
        opened = self.openDirs.get(handle)
        if opened is None:
            self._sendStatus(requestId, FX_FAILURE, b"invalid handle")
            return
        readBatch = getattr(opened[0], "readBatch", None)
        if readBatch is None:
            super().packet_READDIR(data)
            return
        d = readBatch()
        d.addCallback(self._cbSendDirectory, requestId)
        d.addErrback(self._ebStatus, requestId, b"readdir failed")

    def packet_EXTENDED(self, data: bytes) -> None:
        requestId = data[:4]
        name, extension = getNS(data[4:])
        if name != b"posix-rename@openssh.com":
            super().packet_EXTENDED(data)
            return
        # Answered with a status, not an extended reply.
        old, rest = getNS(extension)
        new, _ = getNS(rest)
        d = maybeDeferred(self.client.posixRename, old, new)
        d.addCallback(self._cbStatus, requestId, b"rename succeeded")
        d.addErrback(self._ebStatus, requestId, b"rename failed")

    def packet_CLOSE(self, data: bytes) -> None:
        """
        Close a file or directory.  Its handle is freed once the close
        ends, whether it succeeded or not (Conch frees it only on
        success, so every failed CLOSE would hold a handle for the rest of
        the session).  Bytes after the handle are ignored, as by OpenSSH's
        sftp-server.
        """
        requestId = data[:4]
        handle, _ = getNS(data[4:])
        if handle in self.openFiles:
            target, table = self.openFiles[handle], self.openFiles
        elif handle in self.openDirs:
            target, table = self.openDirs[handle][0], self.openDirs
        else:
            self._sendStatus(requestId, FX_FAILURE, b"invalid handle")
            return
        d = maybeDeferred(target.close)
        if handle not in self._closing:
            self._closing.add(handle)

            def closed(result: object) -> object:
                self._closing.discard(handle)
                table.pop(handle, None)
                return result

            d.addBoth(closed)
        d.addCallback(lambda _: self._sendStatus(requestId, FX_OK, b"file closed"))
        d.addErrback(self._ebStatus, requestId, b"close failed")

    def _ebStatus(self, reason: Failure, requestId: bytes, msg: bytes = b"request failed") -> None:
        # Conch reports an unknown handle (FSTAT, FSETSTAT, READDIR) with a
        # KeyError, which it would log as an unexpected error.
        if reason.check(KeyError):
            self._sendStatus(requestId, FX_FAILURE, b"invalid handle")
            return
        super()._ebStatus(reason, requestId, msg)

    def _ebUnknownHandle(self, reason: Failure, requestId: bytes) -> None:
        # Conch calls these for READ/WRITE on an unknown handle but does not
        # define them, so the client would wait for ever (twisted#12140).
        self._sendStatus(requestId, FX_FAILURE, b"invalid handle")

    _ebRead = _ebWrite = _ebUnknownHandle

    def sendPacket(self, kind: int, data: bytes) -> None:
        # Replies that complete after the connection is gone are dropped:
        # writing them would only re-enter connectionLost.
        if self._lost:
            return
        super().sendPacket(kind, data)
        if kind in _REPLIES:
            self._pending = max(0, self._pending - 1)
            reading = self._reading.get(data[:4])
            if reading:
                self._readingBytes -= reading.pop(0)
                if not reading:
                    del self._reading[data[:4]]
            self._resume()

    def connectionLost(self, reason: Failure | None = None) -> None:
        # Conch calls close() on every open file here, exactly as for a
        # CLOSE request, and may call this method several times.  A file
        # the client did not close is aborted instead; one whose CLOSE is
        # under way finishes it.
        if self._lost:
            return
        self._lost = True
        for handle, fileObj in self.openFiles.items():
            if handle in self._closing:
                continue
            abort = getattr(fileObj, "abort", None)
            if abort is not None:
                abort("connection lost")
            else:
                fileObj.close()
        self.openFiles = {}
        super().connectionLost(reason)


class S3Connection(SSHConnection):
    """
    The connection service, with flow control for SFTP channels and
    without a debug event for every window adjustment.

    Conch re-opens a channel's window as soon as data arrives.  For a
    channel with a C{window} (an L{SFTPSession}), the window is left to
    that L{ChannelWindow} instead: it is credited back only once the bytes
    have left memory (conch-pitfalls item 5).
    """

    _log = Logger(namespace="twisted.conch.ssh.connection", observer=_quietObserver)

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

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        localChannel, dataLength = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(localChannel)
        window = getattr(channel, "window", None)
        if window is None:
            super().ssh_CHANNEL_DATA(packet)
            return
        if dataLength > channel.localMaxPacket or not window.receive(dataLength):
            log.warn("Disconnecting: client sent more than its window allows")
            self.transport.sendDisconnect(
                DISCONNECT_PROTOCOL_ERROR, b"channel window exceeded"
            )
            return
        channel.localWindowLeft -= dataLength
        channel.dataReceived(packet[8 : 8 + dataLength])


class SFTPSession(SSHSession):
    """
    A session channel that offers the C{sftp} subsystem and nothing else.

    The stock session adapts the avatar to C{ISession} for these requests,
    which logs a traceback for every OpenSSH client (it sends C{env}).

    Its window starts at L{BASE_WINDOW} and is managed by L{window}
    (see L{S3Connection}): each upload widens it by the memory it reserved.

    @ivar window: the channel's flow control.
    @ivar onWritable: called when the client's window lets held-back data
        go out again (set by the SFTP protocol).
    """

    onWritable: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.localWindowSize = self.localWindowLeft = BASE_WINDOW
        self.window = ChannelWindow(BASE_WINDOW, onGrant=self._grant)

    def _grant(self, amount: int) -> None:
        conn = self.conn
        if conn is not None and self in conn.channelsToRemoteChannel:
            conn.adjustWindow(self, amount)

    def eofReceived(self) -> None:
        # Conch closes a subsystem's channel at the client's EOF without an
        # exit status, which OpenSSH's ssh reports as a failure (scp then
        # exits 1).  Report success first, as sshd does when its
        # sftp-server ends.
        if self.session is None and self.client is not None and self.conn is not None:
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", 0))
        super().eofReceived()

    def addWindowBytes(self, data: int) -> None:
        # Notified after the held-back data went out, not before (as
        # startWriting would be).
        super().addWindowBytes(data)
        if self.onWritable is not None:
            self.onWritable()

    def request_subsystem(self, data: bytes) -> int:
        name, _ = getNS(data)
        if name != b"sftp":
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

    def request_exec(self, data: bytes) -> int:
        return 0


class S3User(ConchUser):
    """
    A logged-in user: their home in the bucket and how to reach it.

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
    """

    def __init__(
        self,
        store: IObjectStore,
        homeTemplate: str,
        policy: UploadPolicy,
        memory: MemoryLimit,
        clock: IReactorTime,
        leases: Leases | None = None,
    ) -> None:
        self.store = store
        self.homeTemplate = homeTemplate
        self.leases = leases
        self.policy = policy
        self.memory = memory
        self.clock = clock
        self.uploads = ActiveUploads()

    def requestAvatar(self, avatarId: bytes, mind: object, *interfaces: Any) -> Any:
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH users are served")
        username = avatarId.decode("ascii")
        user = S3User(
            username,
            homePrefix(self.homeTemplate, username),
            self.store,
            self.policy,
            self.memory,
            self.clock,
            self.uploads,
            self.leases,
        )
        log.info("{username} logged in", username=username)
        return IConchUser, user, user.logout
