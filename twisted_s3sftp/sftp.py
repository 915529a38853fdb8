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

Memory: opening a file for writing reserves the upload's share of the
server's memory limit (L{UploadBudget}), waiting in line for up to
C{memoryWait} seconds when it is used up; the share widens the SSH
channel's window, and the upload credits the window back as its bytes
leave memory (L{twisted_s3sftp.flow}).
"""

from __future__ import annotations

from collections import deque
from functools import wraps
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, TypeVar

from attrs import define, field
from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.filetransfer import FXF_APPEND, FXF_WRITE, SFTPError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
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
from .flow import (
    BASE_WINDOW,
    ChannelWindow,
    FreeWindow,
    MemoryLimit,
    uploadReservation,
)
from .interfaces import IObjectStore
from .listing import (
    ObjectInfo,
    directoryAttributes,
    directoryEntries,
    fileAttributes,
    longName,
)
from .paths import directoryPrefix, normalise, objectKey
from .upload import (
    FinalPart,
    Part,
    PartPlanner,
    PartSchedule,
    SinglePut,
    StoredPart,
    UploadPolicy,
)

if TYPE_CHECKING:
    from .ssh import S3User

log = Logger()

T = TypeVar("T")

#: The most entries one directory listing returns.
MAX_LISTING = 100_000

#: Entries asked for when looking a path up (one S3 list page).
LOOKUP_PAGE = 1000

#: What L{S3SFTPServer._lookup} returns for a directory.
_DIRECTORY = object()


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


@define(eq=False)
class UploadBudget:
    """
    The memory one upload has reserved from the server's L{MemoryLimit},
    and the SSH channel window it credits as bytes leave memory.

    @ivar memory: the server-wide limit.
    @ivar window: the channel the upload's writes arrive on.
    @ivar clock: for the wait timeout.
    @ivar wait: seconds to wait for memory before giving up.
    @ivar reserved: bytes reserved now.
    """

    memory: MemoryLimit
    window: ChannelWindow | FreeWindow
    clock: IReactorTime
    wait: float
    reserved: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False)

    async def reserve(self, minimum: int, wanted: int) -> None:
        """
        Make sure at least C{minimum} bytes are reserved, and up to
        C{wanted} if they are free; widen the channel window to match.

        @raise UploadFailed: if C{minimum} is not free within L{wait}
            seconds.
        """
        if self.reserved >= minimum:
            return
        take = wanted - self.reserved
        if not self.memory.tryReserve(take):
            take = minimum - self.reserved
            await self._waitFor(take)
            if self._closed:
                # The upload ended while it waited.
                self.memory.free(take)
                return
            extra = min(wanted - minimum, self.memory.available)
            if extra > 0 and self.memory.tryReserve(extra):
                take += extra
        self.reserved += take
        self.window.resize(take)

    def release(self, amount: int) -> None:
        """
        C{amount} bytes of the upload's writes have left memory.
        """
        self.window.credit(amount)

    def close(self) -> None:
        """
        Give the reservation back; anything granted later is returned at
        once.
        """
        self._closed = True
        reserved, self.reserved = self.reserved, 0
        self.window.resize(-reserved)
        self.memory.free(reserved)

    async def _waitFor(self, amount: int) -> None:
        granted: Deferred[None] = Deferred()
        withdraw = self.memory.reserveLater(amount, lambda: granted.callback(None))
        if granted.called:
            return

        def giveUp() -> None:
            withdraw()
            granted.errback(
                UploadFailed("server busy: its memory limit is reached, try again later")
            )

        timer = self.clock.callLater(self.wait, giveUp)
        try:
            await granted
        finally:
            if timer.active():
                timer.cancel()


@implementer(ISFTPFile)
@define(eq=False)
class UploadFile:
    """
    One file open for writing: a stream of writes becoming one S3 object.

    Writes are cut into parts by a L{PartPlanner} and answered as soon as
    they are in memory; up to C{policy.concurrency} parts are in flight to
    S3 at once.  What keeps memory bounded is the SSH window: the bytes of
    a write are credited back to the client (L{UploadBudget.release}) only
    once they are stored or dropped.  A failure of any part fails the next
    WRITE and the CLOSE, and aborts the upload.

    L{close} publishes the object, with the file's SHA-256 in its metadata
    (C{x-amz-meta-sha256}); L{abort} discards it.  Once either has begun
    the other is refused, and both may be called repeatedly.

    @ivar store: where the object goes.
    @ivar key: its key.
    @ivar planner: cuts the writes into parts.
    @ivar budget: the memory reserved for this upload.
    @ivar policy: part size growth, limits and concurrency.
    @ivar owner: the user, for the log.
    @ivar now: the clock, for C{fstat}.
    @ivar closeRequested: set when the client sent CLOSE for this file, as
        opposed to the connection being lost.
    """

    store: IObjectStore
    key: str
    planner: PartPlanner
    budget: UploadBudget
    policy: UploadPolicy
    owner: str
    now: Callable[[], float]
    closeRequested: bool = False
    _failure: GatewayError | None = field(default=None, init=False)
    _uploadId: str | None = field(default=None, init=False)
    _creating: bool = field(default=False, init=False)
    _queue: deque[Part] = field(factory=deque, init=False)
    _inFlight: int = field(default=0, init=False)
    _partBytes: int = field(default=0, init=False)
    _charged: int = field(default=0, init=False)
    _stored: list[StoredPart] = field(factory=list, init=False)
    _idle: list[Deferred[None]] = field(factory=list, init=False)
    _partSizeReserved: int = field(init=False)
    _closing: Deferred[None] | None = field(default=None, init=False)
    _aborting: Deferred[None] | None = field(default=None, init=False)
    _completed: bool = field(default=False, init=False)
    _ended: bool = field(default=False, init=False)

    @_partSizeReserved.default
    def _initialPartSize(self) -> int:
        return self.planner.nextPartSize

    @property
    def completed(self) -> bool:
        """
        Whether the object was stored.
        """
        return self._completed

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        """
        Take one write into memory; answered at once unless the part size
        grew and more memory must be reserved.

        This is the one operation run for every 32 KiB uploaded, so it is
        a plain method rather than a coroutine: it costs a tenth of the
        server's CPU per byte otherwise.
        """
        # The channel window charged these bytes; they are credited back
        # once they leave memory (_credit).
        self._charged += len(data)
        try:
            if self._closing is not None:
                raise UploadFailed("file is closing")
            self._checkWritable()
            try:
                parts = self.planner.feed(offset, data)
            except GatewayError as e:
                self._fail(e)
                raise
            self._enqueue(parts)
            self._checkWritable()
        except GatewayError as e:
            return self._refuse("write", e)
        finally:
            self._credit()
        if self.planner.nextPartSize > self._partSizeReserved:
            return self._grow()
        return succeed(None)

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
        try:
            plan = self.planner.finish()
            metadata = {"sha256": self.planner.sha256}
            if isinstance(plan, SinglePut):
                self._partBytes += len(plan.data)
                try:
                    await self.store.putObject(self.key, plan.data, metadata)
                finally:
                    self._partBytes -= len(plan.data)
                    self._credit()
            else:
                await self._finishMultipart(plan, metadata)
        except GatewayError as e:
            self._fail(e)
            raise UploadFailed(f"upload failed: {e.message}") from e
        self._completed = True
        self._end()
        log.info(
            "Stored {key} for {owner}: {size} bytes in {parts} part(s), "
            "sha256 {sha256}",
            key=self.key,
            owner=self.owner,
            size=self.planner.received,
            parts=max(1, self.planner.partsPlanned),
            sha256=self.planner.sha256,
        )

    async def _finishMultipart(self, plan: FinalPart, metadata: dict[str, str]) -> None:
        self._enqueue([plan.part])
        await self._settled()
        self._checkWritable()
        assert self._uploadId is not None
        etag = await self.store.completeMultipartUpload(
            self.key, self._uploadId, self._stored
        )
        # The upload id is spent: from here a failure deletes the object.
        self._uploadId = None
        # S3 fixes an upload's metadata when it begins, before the hash is
        # known: record it with a copy of the object onto itself.
        try:
            await self.store.replaceMetadata(
                self.key, etag, self.planner.received, metadata
            )
        except GatewayError:
            try:
                await self.store.deleteObject(self.key)
            except GatewayError as e:
                log.error(
                    "Could not delete {key} after failing to record its "
                    "checksum: {reason}",
                    key=self.key,
                    reason=e.message,
                )
            raise

    @sftpOperation("write")
    async def _grow(self) -> None:
        """
        The part size grew: reserve memory for the larger parts.
        """
        partSize = self.planner.nextPartSize
        self._partSizeReserved = partSize
        minimum, wanted = uploadReservation(
            partSize, self.policy.concurrency, self.policy.bufferLimit
        )
        try:
            await self.budget.reserve(minimum, wanted)
        except GatewayError as e:
            self._fail(e)
            raise
        self.planner.capacity = self.budget.reserved + BASE_WINDOW
        self._checkWritable()

    def _checkWritable(self) -> None:
        if self._failure is not None:
            raise UploadFailed(f"upload failed: {self._failure.message}")

    def _credit(self) -> None:
        """
        Credit the channel window with the bytes of this upload's writes
        that are no longer in memory.
        """
        inMemory = self.planner.held + self._partBytes
        if self._charged > inMemory:
            self.budget.release(self._charged - inMemory)
            self._charged = inMemory

    def _enqueue(self, parts: list[Part]) -> None:
        for part in parts:
            self._queue.append(part)
            self._partBytes += len(part.data)
        self._pump()

    def _pump(self) -> None:
        """
        Start the multipart upload, or as many queued parts as may fly.
        """
        if self._failure is not None:
            self._partBytes -= sum(len(part.data) for part in self._queue)
            self._queue.clear()
            self._credit()
        elif self._uploadId is None:
            if self._queue and not self._creating:
                self._creating = True
                Deferred.fromCoroutine(self._create())
        else:
            while self._queue and self._inFlight < self.policy.concurrency:
                self._inFlight += 1
                Deferred.fromCoroutine(self._send(self._queue.popleft()))
        if not (self._queue or self._inFlight or self._creating):
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    async def _create(self) -> None:
        try:
            self._uploadId = await self.store.createMultipartUpload(self.key)
        except Exception as e:
            self._partFailed(e)
        finally:
            self._creating = False
        self._pump()

    async def _send(self, part: Part) -> None:
        assert self._uploadId is not None
        try:
            stored = await self.store.uploadPart(
                self.key, self._uploadId, part.number, part.data
            )
            self._stored.append(stored)
        except Exception as e:
            self._partFailed(e)
        finally:
            self._inFlight -= 1
            self._partBytes -= len(part.data)
            self._credit()
        self._pump()

    def _partFailed(self, error: Exception) -> None:
        if not isinstance(error, GatewayError):
            log.failure(
                "Unexpected error uploading {key}", Failure(error), key=self.key
            )
            error = UploadFailed("internal error")
        self._fail(error)

    async def _settled(self) -> None:
        """
        Wait until no part is queued or in flight.
        """
        if self._queue or self._inFlight or self._creating:
            waiter: Deferred[None] = Deferred()
            self._idle.append(waiter)
            await waiter

    def _fail(self, error: GatewayError) -> None:
        """
        Record the first failure, drop what is held and start aborting.
        """
        if self._failure is not None or self._completed:
            if self._aborting is None:
                self._aborting = succeed(None)
            return
        self._failure = error
        log.warn(
            "Upload of {key} for {owner} failed after {size} bytes: {reason}",
            key=self.key,
            owner=self.owner,
            size=self.planner.received,
            reason=getattr(error, "storeCode", "") or error.message,
        )
        self.planner.discard()
        self._pump()
        self._aborting = Deferred.fromCoroutine(self._abortUpload())

    async def _abortUpload(self) -> None:
        await self._settled()
        if self._uploadId is not None:
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
        self._end()

    def _end(self) -> None:
        """
        Give back the memory and any window still charged, once.
        """
        if self._ended:
            return
        self._ended = True
        if self._charged:
            self.budget.release(self._charged)
            self._charged = 0
        self.budget.close()

    def _refuse(self, operation: str, error: GatewayError) -> Deferred[None]:
        return fail(sftpError(Failure(error), operation, self.key))


@implementer(ISFTPServer)
@define(eq=False)
class S3SFTPServer:
    """
    The SFTP operations of one user's session, confined to their home.

    @ivar avatar: the logged-in user.
    @ivar window: the SSH channel window the session's writes arrive on
        (set by the SFTP protocol; unmetered otherwise).
    """

    avatar: S3User
    window: ChannelWindow | FreeWindow = field(factory=FreeWindow)

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
        policy = self.avatar.policy
        schedule = PartSchedule(policy.partSize, policy.limits)
        budget = UploadBudget(
            self.avatar.memory, self.window, self.avatar.clock, policy.memoryWait
        )
        await budget.reserve(
            *uploadReservation(policy.partSize, policy.concurrency, policy.bufferLimit)
        )
        log.info("Upload of {key} for {owner} opened", key=key, owner=self.avatar.username)
        return UploadFile(
            store=self._store,
            key=key,
            planner=PartPlanner(schedule, capacity=budget.reserved + BASE_WINDOW),
            budget=budget,
            policy=policy,
            owner=self.avatar.username,
            now=self.avatar.clock.seconds,
        )

    @sftpOperation("stat")
    async def getAttrs(self, path: bytes, followLinks: bool) -> dict[str, int]:
        virtual = normalise(path)
        now = int(self.avatar.clock.seconds())
        found = await self._lookup(virtual)
        if found is None:
            raise NoSuchFile("no such file or directory")
        if found is _DIRECTORY:
            return directoryAttributes(now)
        assert isinstance(found, ObjectInfo)
        return fileAttributes(found.size, found.mtime)

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
        found = await self._lookup(virtual)
        if found is _DIRECTORY:
            raise GatewayError("directory already exists")
        if found is not None:
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

    async def _lookup(self, virtual: str) -> ObjectInfo | object | None:
        """
        Find what a path names, in one S3 request in all but rare cases.

        A listing of the key itself as a prefix (with C{/} as delimiter)
        holds the object of that exact key, if there is one, as its first
        entry, and the key's C{dir/} prefix if it is a directory, unless
        more than L{LOOKUP_PAGE} siblings sort between them (names that
        extend it with a character before C{/}, such as C{name.txt}); only
        then is a second request made.  A file wins over a directory of
        the same name.

        @return: the file's L{ObjectInfo}, L{_DIRECTORY}, or L{None}.
        """
        if virtual == "/":
            return _DIRECTORY
        key = objectKey(self._home, virtual)
        listing = await self._store.listDirectory(key, LOOKUP_PAGE)
        for info in listing.objects:
            if info.key == key:
                return info
        if key + "/" in listing.prefixes:
            return _DIRECTORY
        if len(listing.objects) + len(listing.prefixes) >= LOOKUP_PAGE:
            directory = await self._store.listDirectory(key + "/", 1)
            if directory.objects or directory.prefixes:
                return _DIRECTORY
        return None
