"""
The Conch glue: SSH factory, transport, realm, avatar, session and the SFTP
subsystem, each a small subclass that fixes one thing Conch gets wrong for
this server (see C{conch-pitfalls.md}).

  - L{S3FileTransferServer}: a lost connection aborts open uploads instead
    of closing them (Conch calls the same C{close()} for both); WRITE and
    READ on an unknown handle get a status instead of silence; SFTP
    messages above 256 KiB close the channel; per-packet log chatter is
    dropped.
  - L{SFTPSession}: only the C{sftp} subsystem; C{env}, C{shell}, C{exec}
    and C{pty-req} are refused quietly.
  - L{S3ServerTransport}: C{server-sig-algs} lists the user-key signature
    algorithms, so RSA user keys work with an ed25519 host key.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser, ISFTPServer
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.filetransfer import FX_FAILURE, FX_OK, FileTransferServer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.session import SSHSession
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred.portal import IRealm, Portal
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

from .interfaces import IObjectStore
from .paths import homePrefix
from .sftp import S3SFTPServer

log = Logger()

#: The largest SFTP message accepted: OpenSSH's own limit (256 KiB) plus
#: room for the header, as its sftp-server allows.
MAX_SFTP_MESSAGE = 256 * 1024 + 1024

#: Signature algorithms accepted for user keys (RFC 8308 server-sig-algs).
USER_SIGNATURE_ALGORITHMS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
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

    def dataReceived(self, data: bytes) -> None:
        if self._lost:
            return
        super().dataReceived(data)
        if len(self.buf) >= 4:
            (length,) = struct.unpack("!L", self.buf[:4])
            if length > MAX_SFTP_MESSAGE:
                log.warn(
                    "Closing SFTP channel: client sent a {length}-byte message",
                    length=length,
                )
                self.buf = b""
                self.transport.loseConnection()

    def packet_CLOSE(self, data: bytes) -> None:
        handle, _ = getNS(data[4:])
        fileObj = self.openFiles.get(handle)
        if fileObj is not None:
            fileObj.closeRequested = True
        super().packet_CLOSE(data)

    def _ebUnknownHandle(self, reason: Failure, requestId: bytes) -> None:
        # Conch calls these for READ/WRITE on an unknown handle but does not
        # define them, so the client would wait for ever (twisted#12140).
        self._sendStatus(requestId, FX_FAILURE, b"invalid handle")

    _ebRead = _ebWrite = _ebUnknownHandle

    def _cbClose(
        self, result: object, handle: bytes, requestId: bytes, isDir: int = 0
    ) -> None:
        # A close may finish after connectionLost emptied the tables.
        (self.openDirs if isDir else self.openFiles).pop(handle, None)
        self._sendStatus(requestId, FX_OK, b"file closed")

    def sendPacket(self, kind: int, data: bytes) -> None:
        # Replies that complete after the connection is gone are dropped:
        # writing them would only re-enter connectionLost.
        if not self._lost:
            super().sendPacket(kind, data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        # Conch calls close() on every open file here, exactly as for a
        # CLOSE request, and may call this method several times.
        if self._lost:
            return
        self._lost = True
        for fileObj in self.openFiles.values():
            if not getattr(fileObj, "closeRequested", True):
                fileObj.abort("connection lost")
        self.openFiles = {}
        super().connectionLost(reason)


class QuietConnection(SSHConnection):
    """
    The connection service, without its debug event for every window
    adjustment (one per 64 KiB received).
    """

    _log = Logger(namespace="twisted.conch.ssh.connection", observer=_quietObserver)


class SFTPSession(SSHSession):
    """
    A session channel that offers the C{sftp} subsystem and nothing else.

    The stock session adapts the avatar to C{ISession} for these requests,
    which logs a traceback for every OpenSSH client (it sends C{env}).
    """

    def request_env(self, data: bytes) -> int:
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
    @ivar partSize: the multipart part size.
    @ivar clock: the time source for attributes.
    """

    def __init__(
        self,
        username: str,
        home: str,
        store: IObjectStore,
        partSize: int,
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self.username = username
        self.home = home
        self.store = store
        self.partSize = partSize
        self.clock = clock
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
    @ivar partSize: the multipart part size.
    @ivar clock: the time source.
    """

    def __init__(
        self,
        store: IObjectStore,
        homeTemplate: str,
        partSize: int,
        clock: IReactorTime,
    ) -> None:
        self.store = store
        self.homeTemplate = homeTemplate
        self.partSize = partSize
        self.clock = clock

    def requestAvatar(self, avatarId: bytes, mind: object, *interfaces: Any) -> Any:
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH users are served")
        username = avatarId.decode("ascii")
        user = S3User(
            username,
            homePrefix(self.homeTemplate, username),
            self.store,
            self.partSize,
            self.clock,
        )
        log.info("{username} logged in", username=username)
        return IConchUser, user, user.logout


class S3ServerTransport(SSHServerTransport):
    """
    The server transport, advertising the user-key signature algorithms it
    accepts rather than its host key algorithms (twisted#12107).
    """

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        super().sendExtInfo(
            [
                (name, b",".join(USER_SIGNATURE_ALGORITHMS))
                if name == b"server-sig-algs"
                else (name, value)
                for name, value in extensions
            ]
        )


class S3SSHFactory(SSHFactory):
    """
    The SSH server factory.

    @ivar portal: authenticates users.
    """

    protocol = S3ServerTransport
    services = {**SSHFactory.services, b"ssh-connection": QuietConnection}

    def __init__(self, portal: Portal, hostKeys: dict[bytes, Key]) -> None:
        self.portal = portal
        self.privateKeys = hostKeys
        self.publicKeys = {kind: key.public() for kind, key in hostKeys.items()}

    def getPrimes(self) -> None:
        return None
