"""
The SFTP operations, over an L{IObjectStore}: Conch's C{ISFTPServer} and
C{ISFTPFile}.

This module only translates.  Paths go through L{twisted_s3sftp.paths},
uploads through L{twisted_s3sftp.upload}, attributes through
L{twisted_s3sftp.listing}, and every error through L{sftpError}, the one
place where an exception becomes an SFTP status.

What is offered here is what uploading needs: C{realpath}, C{stat},
C{opendir}/C{readdir}, C{mkdir}, C{remove}, and opening a file for
writing.  Attribute changes (C{put -p}) are accepted and ignored.  Reading
files back, renaming and removing directories answer C{OP_UNSUPPORTED}
with a reason.

Upload life cycle (see L{UploadFile}): the object appears only when the
client's CLOSE succeeds.  A failed WRITE, a failed S3 call or a lost
connection aborts the upload instead, and the CLOSE that OpenSSH still
sends afterwards fails (conch-pitfalls items 1 and 2).
"""

from __future__ import annotations

from functools import wraps
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, TypeVar

from attrs import define, field
from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.filetransfer import FXF_APPEND, FXF_WRITE, SFTPError
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import (
    FX_FAILURE,
    GatewayError,
    NoSuchFile,
    NotSupported,
    UploadFailed,
    statusFor,
)
from .interfaces import IObjectStore
from .listing import (
    directoryAttributes,
    directoryEntries,
    fileAttributes,
    longName,
)
from .paths import directoryPrefix, normalise, objectKey
from .upload import FinalPart, Part, PartPlanner, SinglePut

if TYPE_CHECKING:
    from .ssh import S3User

log = Logger()

T = TypeVar("T")

#: The most entries one directory listing returns.
MAX_LISTING = 100_000


def sftpError(failure: Failure, operation: str, subject: str) -> Failure:
    """
    Turn any failure of an SFTP operation into the status the client gets.

    Expected errors (L{GatewayError}) keep their code and message; anything
    else is logged with its traceback and context and answered with
    C{FX_FAILURE} and a message that reveals nothing.

    @param failure: the operation's failure.
    @param operation: the operation's name, for the log and the message.
    @param subject: what it was applied to (a path, a key), for the log.
    @return: a failure wrapping an ASCII-only L{SFTPError}.
    """
    status = statusFor(failure.value)
    if status is None:
        log.failure(
            "Unexpected error in {operation} on {subject}",
            failure,
            operation=operation,
            subject=subject,
        )
        status = (FX_FAILURE, f"{operation} failed (internal error)")
    return Failure(SFTPError(*status))


def sftpOperation(
    operation: str,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Deferred[T]]]:
    """
    Decorate an C{async} SFTP method: run it as a Deferred and translate
    its failure with L{sftpError}.

    @param operation: the name used in logs and messages.
    """

    def decorator(method: Callable[..., Awaitable[T]]) -> Callable[..., Deferred[T]]:
        @wraps(method)
        def wrapper(self: object, *args: Any) -> Deferred[T]:
            d = Deferred.fromCoroutine(method(self, *args))  # type: ignore[arg-type]
            if args and isinstance(args[0], bytes):
                subject = args[0].decode("utf-8", "replace")
            else:
                subject = getattr(self, "key", type(self).__name__)
            return d.addErrback(sftpError, operation, subject)

        return wrapper

    return decorator


@define(eq=False)
class DirectoryListing:
    """
    A listing Conch hands out in READDIR batches: an iterable of
    C{(name, longname, attrs)} with a C{close} method.

    The whole listing is fetched before Conch sees it: Conch cannot iterate
    Deferreds (conch-pitfalls item 9).
    """

    entries: list[tuple[bytes, bytes, dict[str, int]]]

    def __iter__(self) -> Iterator[tuple[bytes, bytes, dict[str, int]]]:
        return iter(self.entries)

    def close(self) -> None:
        self.entries = []


@implementer(ISFTPFile)
@define(eq=False)
class UploadFile:
    """
    One file open for writing: a stream of writes becoming one S3 object.

    Writes are cut into parts by a L{PartPlanner}.  At most one part is in
    flight to S3 while the next one fills; the write that completes a part
    is answered once the previous part is stored, which keeps a slow S3
    from piling parts up in memory.  A failure of any part is reported on
    the next WRITE and at CLOSE.

    L{close} publishes the object; L{abort} discards it.  Once either has
    begun the other is refused, and both may be called repeatedly.

    @ivar store: where the object goes.
    @ivar key: its key.
    @ivar planner: cuts the writes into parts.
    @ivar owner: the user, for the log.
    @ivar now: the clock, for C{fstat}.
    @ivar closeRequested: set when the client sent CLOSE for this file, as
        opposed to the connection being lost.
    """

    store: IObjectStore
    key: str
    planner: PartPlanner
    owner: str
    now: Callable[[], float]
    closeRequested: bool = False
    _failure: GatewayError | None = field(default=None, init=False)
    _uploadId: str | None = field(default=None, init=False)
    _etags: list[str] = field(factory=list, init=False)
    _lastPart: Deferred[None] = field(init=False)
    _closing: Deferred[None] | None = field(default=None, init=False)
    _aborting: Deferred[None] | None = field(default=None, init=False)
    _completed: bool = field(default=False, init=False)

    @_lastPart.default
    def _noPartYet(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    @property
    def completed(self) -> bool:
        """
        Whether the object was stored.
        """
        return self._completed

    @sftpOperation("write")
    async def writeChunk(self, offset: int, data: bytes) -> None:
        if self._closing is not None:
            raise UploadFailed("file is closing")
        self._checkWritable()
        try:
            parts = self.planner.feed(offset, data)
        except GatewayError as e:
            self._fail(e)
            raise
        for part in parts:
            await self._queuePart(part)
        self._checkWritable()

    def close(self) -> Deferred[None]:
        """
        Publish the object: the returned Deferred fires once S3 has it.

        @return: a Deferred; it fails if the upload failed, was aborted, or
            a close is already under way.
        """
        if self._closing is not None:
            return self._refuse("close", UploadFailed("file is already closing"))
        self._closing = self._close()
        return self._closing

    def abort(self, reason: str = "upload aborted") -> Deferred[None]:
        """
        Discard the upload: no object appears, no multipart upload is left.
        Idempotent; a no-op once the object is stored.

        @param reason: why, for the log.
        @return: a Deferred that fires when S3 has discarded the parts.
        """
        self._fail(UploadFailed(reason))
        assert self._aborting is not None
        return self._aborting

    @sftpOperation("read")
    async def readChunk(self, offset: int, length: int) -> bytes:
        raise NotSupported("file is open for writing only")

    @sftpOperation("fstat")
    async def getAttrs(self) -> dict[str, int]:
        return fileAttributes(self.planner.received, int(self.now()))

    @sftpOperation("fsetstat")
    async def setAttrs(self, attrs: dict[str, int]) -> None:
        # Permissions, owners and times are accepted and ignored, so that
        # `put -p` works; S3 keeps none of them.
        return None

    @sftpOperation("close")
    async def _close(self) -> None:
        self._checkWritable()
        plan = self.planner.finish()
        try:
            if isinstance(plan, SinglePut):
                await self.store.putObject(self.key, plan.data)
            else:
                await self._finishMultipart(plan)
        except GatewayError as e:
            self._fail(e)
            raise UploadFailed(f"upload failed: {e.message}") from e
        self._completed = True
        log.info(
            "Stored {key} for {owner}: {size} bytes",
            key=self.key,
            owner=self.owner,
            size=self.planner.received,
        )

    async def _finishMultipart(self, plan: FinalPart) -> None:
        await self._queuePart(plan.part)
        await self._settled()
        self._checkWritable()
        assert self._uploadId is not None
        await self.store.completeMultipartUpload(self.key, self._uploadId, self._etags)

    def _checkWritable(self) -> None:
        if self._failure is not None:
            raise UploadFailed(f"upload failed: {self._failure.message}")

    async def _queuePart(self, part: Part) -> None:
        """
        Send C{part} once the previous part is stored, without waiting for
        C{part} itself.
        """
        previous, mine = self._lastPart, Deferred()
        self._lastPart = mine
        await previous
        if self._failure is not None:
            mine.callback(None)
            self._checkWritable()
        Deferred.fromCoroutine(self._sendPart(part)).addBoth(
            lambda _: mine.callback(None)
        )

    async def _sendPart(self, part: Part) -> None:
        try:
            if self._uploadId is None:
                self._uploadId = await self.store.createMultipartUpload(self.key)
                log.info(
                    "Multipart upload of {key} for {owner} started",
                    key=self.key,
                    owner=self.owner,
                )
            if self._failure is None:
                etag = await self.store.uploadPart(
                    self.key, self._uploadId, part.number, part.data
                )
                self._etags.append(etag)
        except GatewayError as e:
            self._fail(e)
        except Exception:
            log.failure("Unexpected error uploading part of {key}", key=self.key)
            self._fail(UploadFailed("internal error"))

    async def _settled(self) -> None:
        """
        Wait until no part is in flight.
        """
        while True:
            current = self._lastPart
            await current
            if current is self._lastPart:
                return

    def _fail(self, error: GatewayError) -> None:
        """
        Record the first failure and start aborting the upload.
        """
        if self._failure is not None or self._completed:
            if self._aborting is None:
                self._aborting = Deferred()
                self._aborting.callback(None)
            return
        self._failure = error
        log.warn(
            "Upload of {key} for {owner} failed after {size} bytes: {reason}",
            key=self.key,
            owner=self.owner,
            size=self.planner.received,
            reason=getattr(error, "storeCode", "") or error.message,
        )
        self._aborting = Deferred.fromCoroutine(self._abortUpload())

    async def _abortUpload(self) -> None:
        await self._settled()
        if self._uploadId is None:
            return
        try:
            await self.store.abortMultipartUpload(self.key, self._uploadId)
        except GatewayError as e:
            log.error(
                "Could not abort upload {uploadId} of {key}: {reason}; "
                "it stays until a lifecycle rule removes it",
                uploadId=self._uploadId,
                key=self.key,
                reason=e.message,
            )

    @staticmethod
    def _refuse(operation: str, error: GatewayError) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.errback(Failure(error))
        return d.addErrback(sftpError, operation, "")


@implementer(ISFTPServer)
@define(eq=False)
class S3SFTPServer:
    """
    The SFTP operations of one user's session, confined to their home.

    @ivar avatar: the logged-in user.
    """

    avatar: S3User

    @property
    def _store(self) -> IObjectStore:
        return self.avatar.store

    @property
    def _home(self) -> str:
        return self.avatar.home

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {}

    @sftpOperation("realpath")
    async def realPath(self, path: bytes) -> bytes:
        return normalise(path).encode("utf-8")

    @sftpOperation("open")
    async def openFile(self, filename: bytes, flags: int, attrs: dict[str, int]) -> UploadFile:
        path = normalise(filename)
        if not flags & FXF_WRITE:
            raise NotSupported("downloads are not supported yet")
        if flags & FXF_APPEND:
            raise NotSupported("appending to an S3 object is not supported")
        key = objectKey(self._home, path)
        log.info("Upload of {key} for {owner} opened", key=key, owner=self.avatar.username)
        return UploadFile(
            store=self._store,
            key=key,
            planner=PartPlanner(self.avatar.partSize),
            owner=self.avatar.username,
            now=self.avatar.clock.seconds,
        )

    @sftpOperation("stat")
    async def getAttrs(self, path: bytes, followLinks: bool) -> dict[str, int]:
        virtual = normalise(path)
        now = int(self.avatar.clock.seconds())
        if virtual == "/":
            return directoryAttributes(now)
        info = await self._store.headObject(objectKey(self._home, virtual))
        if info is not None:
            return fileAttributes(info.size, info.mtime)
        if await self._isDirectory(virtual):
            return directoryAttributes(now)
        raise NoSuchFile("no such file or directory")

    @sftpOperation("setstat")
    async def setAttrs(self, path: bytes, attrs: dict[str, int]) -> None:
        # Accepted and ignored, as for an open file (UploadFile.setAttrs).
        normalise(path)

    @sftpOperation("opendir")
    async def openDirectory(self, path: bytes) -> DirectoryListing:
        virtual = normalise(path)
        prefix = directoryPrefix(self._home, virtual)
        listing = await self._store.listDirectory(prefix, MAX_LISTING)
        if virtual != "/" and not (listing.objects or listing.prefixes):
            raise NoSuchFile("no such directory")
        now = self.avatar.clock.seconds()
        return DirectoryListing(
            [
                (
                    name.encode("utf-8"),
                    longName(name, attrs, now).encode("utf-8"),
                    attrs,
                )
                for name, attrs in directoryEntries(prefix, listing, now)
            ]
        )

    @sftpOperation("mkdir")
    async def makeDirectory(self, path: bytes, attrs: dict[str, int]) -> None:
        virtual = normalise(path)
        if virtual == "/" or await self._isDirectory(virtual):
            raise GatewayError("directory already exists")
        if await self._store.headObject(objectKey(self._home, virtual)) is not None:
            raise GatewayError("a file with that name exists")
        await self._store.putObject(directoryPrefix(self._home, virtual), b"")

    @sftpOperation("remove")
    async def removeFile(self, path: bytes) -> None:
        key = objectKey(self._home, normalise(path))
        if await self._store.headObject(key) is None:
            raise NoSuchFile("no such file")
        await self._store.deleteObject(key)

    @sftpOperation("rmdir")
    async def removeDirectory(self, path: bytes) -> None:
        raise NotSupported("removing directories is not supported yet")

    @sftpOperation("rename")
    async def renameFile(self, oldPath: bytes, newPath: bytes) -> None:
        raise NotSupported("rename is not supported yet")

    @sftpOperation("readlink")
    async def readLink(self, path: bytes) -> bytes:
        raise NotSupported("S3 has no symbolic links")

    @sftpOperation("symlink")
    async def makeLink(self, linkPath: bytes, targetPath: bytes) -> None:
        raise NotSupported("S3 has no symbolic links")

    @sftpOperation("extended")
    async def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> bytes:
        raise NotSupported("unsupported extension")

    async def _isDirectory(self, virtual: str) -> bool:
        listing = await self._store.listDirectory(
            directoryPrefix(self._home, virtual), 1
        )
        return bool(listing.objects or listing.prefixes)
