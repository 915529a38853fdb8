"""
Conch's SFTP server protocol made safe for uploads that must be all or
nothing: L{S3FileTransferServer}, the C{sftp} subsystem of every session.

  - A lost connection parks open uploads for a resume, or aborts them,
    instead of closing them (Conch calls the same C{close()} for both).
  - Requests on an unknown handle get a status instead of silence.
  - SFTP messages above 256 KiB close the channel.
  - READDIR is served a page at a time in byte-bounded batches.
  - C{posix-rename@openssh.com} is answered with a status.
  - The limits of L{twisted_s3sftp.sftp.extensions} (open handles, requests
    waiting, READ replies under way) are enforced, and messages left unread
    are not credited to the channel window (framing and window credit).
  - Per-packet log chatter is dropped.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh.common import getNS
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
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..ops.logformat import quietObserver
from .checkfile import HANDLE_NAMES
from .extensions import (
    MAX_HANDLES,
    MAX_OUTGOING,
    MAX_PENDING,
    MAX_READ,
    MAX_SFTP_MESSAGE,
    MAX_WRITE,
)
from .flow import ChannelWindow, FreeWindow
from .server import S3SFTPServer
from .upload import UploadFile

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


class S3FileTransferServer(FileTransferServer):
    """
    Conch's SFTP server protocol, made safe for uploads that must be all or
    nothing.
    """

    _log = Logger(namespace="twisted.conch.ssh.filetransfer", observer=quietObserver)
    client: S3SFTPServer
    transport: ITransport
    _lost = False
    _refused = False

    _window: ChannelWindow | FreeWindow | None = None
    _owned = 0
    _pending = 0
    _readingBytes = 0
    _dispatching = False
    _paused = False
    _incomingLength = 0
    # Bytes still missing from the message under way (0 when unknown).
    _wanted = 0
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
        # Downloads and listings open, which a shutdown lets finish
        # (ActiveUploads.holdRead).
        self._reads: set[object] = set()
        # Data received since the last message was handled, not yet
        # joined to buf.
        self._incoming: list[bytes] = []
        if self._session is not None:
            self._session.onWritable = self._resume

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer C{data}; handle the messages it completes.

        A message longer than one SSH packet (OpenSSH writes 256 KiB at a
        time, in 32 KiB packets) is joined once, when its last byte has
        arrived, rather than copied again with every packet.
        """
        if self._lost or self._refused:
            return
        self._incoming.append(data)
        self._incomingLength += len(data)
        if self._incomingLength >= self._wanted:
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
        self._wanted = 0
        try:
            if self._incoming:
                self.buf = b"".join([self.buf, *self._incoming])
                self._incoming.clear()
                self._incomingLength = 0
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
                    self._wanted = end - len(buf)
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
        session = self._session
        backlog = getattr(session, "queued", None)
        if backlog is None:
            backlog = len(getattr(session, "buf", b""))
        return self._pending >= MAX_PENDING or self._readingBytes + backlog >= MAX_OUTGOING

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
        data: memoryview | bytes = message[20 + handleLength :]
        if dataLength > MAX_WRITE:
            raise ValueError(f"WRITE of {dataLength} bytes exceeds {MAX_WRITE}")
        if len(data) < dataLength:
            raise ValueError(
                f"WRITE data length {dataLength} exceeds the message ({len(data)} bytes left)"
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
        self._sendStatus(requestId, FX_FAILURE, b"too many open files (%d)" % (MAX_HANDLES,))
        return True

    def _cbOpenFile(self, fileObj: Any, requestId: bytes) -> None:
        # An OPEN may finish (after waiting for memory) once the connection
        # is gone: nobody can write or close that file, so discard it now
        # rather than keep its memory reserved for ever.  The handle cap is
        # checked again: OPENs may have been pipelined.
        if self._lost or self._handlesFull(requestId):
            if isinstance(fileObj, UploadFile):
                # A resumed upload is parked again, as it was.
                fileObj.park(
                    "connection lost before the file was opened"
                    if self._lost
                    else "too many open files"
                )
            return
        super()._cbOpenFile(fileObj, requestId)
        if not isinstance(fileObj, UploadFile):
            self._readOpened(fileObj)

    def _cbOpenDirectory(self, dirObj: Any, requestId: bytes) -> None:
        if self._lost or self._handlesFull(requestId):
            dirObj.close()
            return
        super()._cbOpenDirectory(dirObj, requestId)
        self._readOpened(dirObj)

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
        checkFileHandle = getattr(self.client, "checkFileHandle", None)
        if name in HANDLE_NAMES and checkFileHandle is not None:
            # The handle is this protocol's to resolve.
            d = maybeDeferred(checkFileHandle, name, extension, self.openFiles.get)
            d.addCallback(self._cbExtended, requestId)
            d.addErrback(self._ebStatus, requestId, b"check-file failed")
            return
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
        uploads = target.uploads if isinstance(target, UploadFile) else None
        if uploads is not None:
            uploads.holdReply()
        d = maybeDeferred(target.close)
        if handle not in self._closing:
            self._closing.add(handle)

            def closed(result: object) -> object:
                self._closing.discard(handle)
                table.pop(handle, None)
                return result

            d.addBoth(closed)
        d.addBoth(self._readClosed, target)
        d.addCallback(lambda _: self._sendStatus(requestId, FX_OK, b"file closed"))
        d.addErrback(self._ebStatus, requestId, b"close failed")
        if uploads is not None:
            # The reply is written (or the connection is gone): a shutdown
            # may now close the connection.
            d.addBoth(lambda _: uploads.releaseReply())

    def _readOpened(self, opened: object) -> None:
        """
        C{opened} (a file open for reading, or a directory listing) was
        given a handle: the drain waits for it.
        """
        if opened not in self._reads:
            self._reads.add(opened)
            self.client.avatar.uploads.holdRead()

    def _readClosed(self, result: object, opened: object) -> object:
        """
        C{opened} is closed (or its connection gone).
        """
        if opened in self._reads:
            self._reads.discard(opened)
            self.client.avatar.uploads.releaseRead()
        return result

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
        # CLOSE request, and may call this method several times.  An upload
        # the client did not close is parked for a resume, or aborted; one
        # whose CLOSE is under way finishes it.
        if self._lost:
            return
        self._lost = True
        for handle, fileObj in self.openFiles.items():
            if handle in self._closing:
                continue
            if isinstance(fileObj, UploadFile):
                fileObj.park("connection lost")
            else:
                fileObj.close()
        self.openFiles = {}
        for opened in list(self._reads):
            self._readClosed(None, opened)
        super().connectionLost(reason)
