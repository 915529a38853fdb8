"""
Uploads: one file open for writing becomes one S3 object, all or nothing.

L{UploadFile} cuts the writes into parts (L{twisted_s3sftp.store.parts}) and
sends them to the store; L{MemoryBudget} is the memory it reserved and the
SSH window it credits back (L{twisted_s3sftp.sftp.flow}); L{ActiveUploads}
lists the uploads under way on this server, so that C{stat}, C{ls} and
C{remove} see them.

Life cycle: the object appears only when the client's CLOSE succeeds.  A
failed WRITE, a failed S3 call or a C{remove} of the file aborts the upload
instead, and the CLOSE that OpenSSH still sends afterwards fails
(conch-pitfalls items 1 and 2).  A lost connection parks a multipart upload
that has stored parts, for a later resume (L{UploadFile.park},
L{twisted_s3sftp.sftp.parked}), and aborts any other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from attrs import define, evolve, field, frozen
from twisted.conch.interfaces import ISFTPFile
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import Changed, FileTooLarge, GatewayError, NotSupported, UploadFailed
from ..ops.audit import audit
from ..store.hashes import hashMetadata, storedStates
from ..store.interfaces import IObjectStore, ObjectInfo, ObjectSettings, StoredObject, StoredPart
from ..store.leases import Lease, Leases
from ..store.parts import (
    Checkpoint,
    FinalPart,
    HashWork,
    Part,
    PartPlanner,
    SinglePut,
    UploadPolicy,
)
from ..store.resume import LeaseRecord
from .attributes import fileAttributes
from .flow import BASE_WINDOW, ChannelWindow, FreeWindow, MemoryLimit, uploadReservation
from .status import sftpError, sftpOperation

log = Logger()

#: Why writing into an existing object at an offset is refused.
RESUME_REFUSED = (
    "writing into the middle of a stored file is not supported: write from "
    "0 to replace it, or from its end ({size}) to append to it"
)

#: Why an append to a stored object is refused.
APPEND_UNSUPPORTED = (
    "appending to this file is not supported: it was stored without the "
    "SHA-256 state an append needs (by another tool, or an older server); "
    "upload the whole file again"
)

#: Hash work smaller than this is done on the reactor thread, when no
#: other is under way: a worker thread's round trip would cost more.
INLINE_HASH = 256 * 1024

#: The metadata key naming the user who uploaded an object
#: (C{x-amz-meta-uploader}): what makes it a file of their own
#: (L{twisted_s3sftp.sftp.rights}) on every server, whichever connection
#: looks at it.
UPLOADER = "uploader"

#: Seconds a parked upload's parts in flight get to be stored.
PARK_WAIT = 10.0

#: Why a change of size is refused.
TRUNCATE_REFUSED = (
    "changing a file's size is not supported: S3 objects cannot be truncated or extended"
)


@define(eq=False)
class MemoryBudget:
    """
    The memory one open file has reserved from the server's
    L{MemoryLimit}, and the SSH channel window it credits as bytes leave
    memory (a L{FreeWindow} for downloads, which receive no data).

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


@frozen
class Resumption:
    """
    What an upload continued from a parked one starts from.

    @ivar lease: the parked upload's lease, claimed by this session; its
        record's checkpoints are those the stored parts bear out.
    @ivar parts: the parts stored, by number, up to the last checkpoint.
    """

    lease: Lease
    parts: tuple[StoredPart, ...]

    @property
    def record(self) -> LeaseRecord:
        """
        The parked upload's record.
        """
        return self.lease.record


@implementer(ISFTPFile)
@define(eq=False)
class UploadFile:
    """
    One file open for writing: a stream of writes becoming one S3 object.

    Writes are cut into parts by a L{PartPlanner} and answered as soon as
    they are in memory; up to C{policy.concurrency} parts are in flight to
    S3 at once.  What keeps memory bounded is the SSH window: the bytes of
    a write are credited back to the client (L{MemoryBudget.release}) only
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
    @ivar uploads: the server's uploads under way, which this one leaves
        when it ends.
    @ivar mtime: the modification time a client set (C{fsetstat} or
        C{setstat} during the upload), stored with the object as
        C{x-amz-meta-mtime}, or L{None}.
    @ivar replaces: for a file opened without C{TRUNC} over an existing
        object, that object's size; L{None} otherwise.  Such an upload
        must write from offset 0 (a WRITE further on is a resume, refused),
        and must either write at least as much as the object held or set
        the size it wrote (as OpenSSH's C{scp} does), or its CLOSE fails:
        the object cannot keep its old tail.
    @ivar path: the path the client opened, for the audit trail.
    @ivar leases: marks a multipart upload as this server's until it ends
        (L{twisted_s3sftp.store.leases}), or L{None}.
    @ivar settings: how the object is stored (storage class, encryption,
        tags), or L{None} for the bucket's defaults.
    @ivar exclusive: store the object only if no object has its key
        (C{If-None-Match: *}), for a user who may not overwrite.
    @ivar maxSize: the most bytes the file may have, or L{None}: the write
        that goes past it fails, and the upload is aborted.
    @ivar onStored: called with the key and the file's attributes once the
        object is stored.
    @ivar resumed: for an upload that continues a parked one, where it
        continues from; the first WRITE must be at the size stored or at
        one of the part boundaries its lease keeps (L{_startResume}).
    @ivar onParked: called with the record and the ETag of the lease of
        an upload parked (L{park}).
    @ivar appending: whether the file was opened with C{APPEND}: writes
        from offset 0 then count from the end of what is stored.
    @ivar appendTo: for a file opened without C{TRUNC} over a stored
        object, that object (with its metadata): a first WRITE at its end
        appends to it (L{_startAppend}).
    @ivar offload: runs a function with its arguments on a worker thread
        and returns a Deferred of its result: where the file's hashes are
        computed, part by part in file order, beside the S3 requests and
        off the reactor thread (C{hashlib} and OpenSSL release the GIL);
        L{None} to hash on the reactor thread.
    """

    store: IObjectStore
    key: str
    planner: PartPlanner
    budget: MemoryBudget
    policy: UploadPolicy
    owner: str
    now: Callable[[], float]
    uploads: ActiveUploads | None = None
    mtime: int | None = None
    replaces: int | None = None
    path: str = ""
    leases: Leases | None = None
    settings: ObjectSettings | None = None
    exclusive: bool = False
    maxSize: int | None = None
    onStored: Callable[[str, dict[str, int]], None] | None = None
    resumed: Resumption | None = None
    onParked: Callable[[LeaseRecord, str], None] | None = None
    appending: bool = False
    appendTo: ObjectInfo | None = None
    offload: Callable[..., Deferred[Any]] | None = None
    _written: bool = field(default=False, init=False)
    _hashQueue: deque[HashWork] = field(factory=deque, init=False)
    _hashing: bool = field(default=False, init=False)
    _hashedParts: int = field(default=0, init=False)
    _hashWaiters: list[tuple[int | None, Deferred[None]]] = field(factory=list, init=False)
    _shift: int = field(default=0, init=False)
    _floor: int = field(default=0, init=False)
    _parking: bool = field(default=False, init=False)
    _appending: Deferred[None] | None = field(default=None, init=False)
    _confirmed: dict[int, str] = field(factory=dict, init=False)
    _contiguous: int = field(default=0, init=False)
    _sizeSet: bool = field(default=False, init=False)
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
    _lease: Lease | None = field(default=None, init=False)
    _started: float = field(init=False)

    @_partSizeReserved.default
    def _initialPartSize(self) -> int:
        return self.planner.nextPartSize

    @_started.default
    def _startTime(self) -> float:
        return self.now()

    def __attrs_post_init__(self) -> None:
        # The upload drives the hashing (L{_startHashing}).
        self.planner.deferHashing = True
        if self.resumed is not None:
            self._uploadId = self.resumed.record.uploadId
            self._lease = self.resumed.lease
            self._lease.onLost = self._taken
            # The claim has just written it.
            self._lease.renew(now=False)
            for part in self.resumed.parts:
                self._stored.append(part)
                self._confirm(part)

    @property
    def completed(self) -> bool:
        """
        Whether the object was stored.
        """
        return self._completed

    @property
    def closing(self) -> Deferred[None] | None:
        """
        The outcome of the CLOSE under way, or L{None} before one.
        """
        return self._closing

    @property
    def parking(self) -> Deferred[None] | None:
        """
        While the upload is being parked (L{park}), a Deferred that fires
        once it is (or was aborted instead); L{None} otherwise.
        """
        return self._aborting if self._parking and not self._ended else None

    def attributes(self) -> dict[str, int]:
        """
        @return: the file's attributes so far: the bytes received (while it
            is being parked, the bytes stored), and the time set by the
            client or else the current time.
        """
        mtime = self.mtime if self.mtime is not None else int(self.now())
        if self._parking:
            checkpoints = self._confirmedCheckpoints()
            return fileAttributes(checkpoints[-1].offset if checkpoints else 0, mtime)
        if self.appendTo is not None and not self._written:
            # The stored file, until the first WRITE says what becomes of it.
            return fileAttributes(self.appendTo.size, mtime)
        return fileAttributes(self.planner.received, mtime)

    def changeAttributes(self, attrs: dict[str, int]) -> None:
        """
        Apply a C{setstat}: keep the modification time for the object;
        ignore permissions and owners, which S3 does not keep.

        @raise NotSupported: for a change of size (truncation).
        """
        if "size" in attrs:
            if attrs["size"] != self.planner.received:
                raise NotSupported(TRUNCATE_REFUSED)
            self._sizeSet = True
        if "mtime" in attrs:
            self.mtime = attrs["mtime"]

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
                if not self._written:
                    self._written = True
                    if self.resumed is not None:
                        self._startResume(offset)
                    elif self.appendTo is not None and (
                        offset == self.appendTo.size or (self.appending and offset == 0)
                    ):
                        self._startAppend(offset)
                    elif offset and self.replaces is not None:
                        raise NotSupported(RESUME_REFUSED.format(size=self.replaces))
                offset += self._shift
                if offset < self._floor:
                    raise NotSupported(
                        f"write at offset {offset}: the first {self._floor} bytes are the "
                        "stored file being appended to, and cannot be rewritten"
                    )
                if self.maxSize is not None and offset + len(data) > self.maxSize:
                    raise FileTooLarge(
                        f"file too large: this user may store files of at most {self.maxSize} bytes"
                    )
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

    def _startResume(self, offset: int) -> None:
        """
        The first WRITE of a resumed upload: it must continue at the size
        stored, or at an earlier part boundary kept (whose parts are then
        sent again), or start the file again from 0 (a replacement, as
        OpenSSH's C{scp} writes).  On an C{APPEND} handle, offsets from 0
        count from the end (C{curl -a}); from the size stored, as they are
        (OpenSSH, paramiko).

        @raise NotSupported: for any other offset; the upload is parked
            again as it was, so that a client that asks the size again can
            resume.
        """
        assert self.resumed is not None
        stored = self.planner.received
        if offset == stored:
            return
        if self.appending and offset == 0:
            self._shift = stored
            return
        checkpoint = self.resumed.record.boundary(offset)
        if checkpoint is None and offset:
            message = (
                f"cannot resume at offset {offset}: the server holds the first "
                f"{stored} bytes of this file; resume from {stored} (ask its size "
                "again), or upload it again"
            )
            self._detach(UploadFailed(message), park=True)
            raise NotSupported(message)
        old = self.planner
        planner = PartPlanner(
            old.schedule, old.capacity, old.buffers, old.algorithms, old.deferHashing
        )
        if checkpoint is not None:
            planner.restart(
                [c for c in self.resumed.record.checkpoints if c.parts <= checkpoint.parts]
            )
        self.planner = planner
        parts = planner.partsPlanned
        self._stored = [part for part in self._stored if part.number <= parts]
        self._confirmed = {n: c for n, c in self._confirmed.items() if n <= parts}
        self._contiguous = min(self._contiguous, parts)
        if self._lease is not None:
            # At once, so that no later resume counts on the parts about to
            # be replaced (from 0, by other bytes).
            del self._lease.checksums[parts:]
            self._lease.record = evolve(
                self._lease.record, checkpoints=planner.checkpoints, checksums=b""
            )
            self._lease.flush()

    def _startAppend(self, offset: int) -> None:
        """
        The first WRITE at the end of a stored object (or from 0 on an
        C{APPEND} handle): a new multipart upload of the same key whose
        first parts are server-side copies of the object's parts (by the
        part schedule), whose next part starts with the object's tail (read
        into memory: less than a part), and then the client's bytes.  The
        object stays as it was until the CLOSE completes the upload.

        @raise NotSupported: if the object is larger than a part and has no
            saved hash state (another tool, or an older server, stored it).
        """
        info = self.appendTo
        assert info is not None
        schedule = self.planner.schedule
        parts = 0
        while schedule.startOf(parts + 2) <= info.size:
            parts += 1
        states = None
        if parts:
            # Hashes the stored object has no state of are not kept.
            states = storedStates(info.metadata, info.size)
            if "sha256" not in states:
                raise NotSupported(APPEND_UNSUPPORTED)
        tail = self.planner.appendFrom(parts, states, info.size)
        # The stored bytes are the store's to place, the client's come after.
        self._floor = info.size
        if self.appending and offset == 0:
            self._shift = info.size
        self._creating = True
        self._appending = Deferred.fromCoroutine(self._copyStored(info, parts, tail))

    async def _copyStored(self, info: ObjectInfo, parts: int, tail: int) -> None:
        """
        Create the multipart upload of an append, copy the stored object's
        parts into it, and feed its tail to the planner.
        """
        schedule = self.planner.schedule
        try:
            numbers = list(range(1, parts + 1))
            if numbers:
                # Else the file may yet fit one PutObject: the upload is
                # created as any other, once a part is cut.
                await self._createUpload()
            uploadId = self._uploadId or ""
            while numbers and self._failure is None:
                batch, numbers = (
                    numbers[: self.policy.concurrency],
                    numbers[self.policy.concurrency :],
                )
                copies = [
                    self.store.uploadPartCopy(
                        self.key,
                        uploadId,
                        n,
                        info.key,
                        info.etag,
                        schedule.startOf(n),
                        schedule.startOf(n + 1),
                    )
                    for n in batch
                ]
                try:
                    copied = await gatherResults(copies, consumeErrors=True)
                except FirstError as e:
                    e.subFailure.raiseException()
                for stored in copied:
                    self._stored.append(stored)
                    self._confirm(stored)
            if tail < info.size and self._failure is None:
                data = await self.store.getObject(info.key, tail, info.size - tail, info.etag)
                if len(data) != info.size - tail:
                    raise UploadFailed("the stored file changed while it was appended to")
                # Not charged to the channel window: it delays the credit of
                # the client's bytes by less than a part, until its part is
                # stored.
                self._enqueue(self.planner.feed(tail, data))
        except Exception as e:
            self._partFailed(e)
        finally:
            self._creating = False
        self._pump()

    def park(self, reason: str) -> Deferred[None]:
        """
        The client went away (or the server is shutting down) without
        closing the file: keep what S3 has stored for a later resume, if
        the upload can be resumed (L{twisted_s3sftp.store.leases}), else
        abort it.

        @return: a Deferred that fires once the upload is parked or aborted.
        """
        if self._failure is not None or self._completed or self._closing is not None:
            return self.abort(reason)
        if not self._resumable():
            return self.abort(reason)
        self._detach(UploadFailed(f"the upload was interrupted ({reason})"), park=True)
        assert self._aborting is not None
        return self._aborting

    def _resumable(self) -> bool:
        return (
            self.leases is not None
            and bool(self.leases.resumeTtl)
            and self._lease is not None
            and self._uploadId is not None
            # Its hashes may not have taken in the parts yet: parking
            # waits for them, and aborts if no checkpoint comes of it.
            and self.planner.partsPlanned > 0
            and self.planner.hashes.resumable
        )

    def _taken(self, reason: str) -> None:
        """
        Another session claimed this upload (its lease changed under it):
        stop, and leave the upload to it.
        """
        self._detach(UploadFailed(reason), park=False)

    def _detach(self, error: GatewayError, park: bool) -> None:
        """
        Stop this handle without aborting the upload: with C{park}, once
        its parts in flight are stored, write its lease as parked; else
        leave it to the session that took it over.
        """
        if self._failure is not None or self._completed:
            return
        self._failure = error
        self._parking = park
        self.planner.discard()
        self._pump()
        self._aborting = Deferred.fromCoroutine(self._park() if park else self._leave())

    async def _leave(self) -> None:
        await self._settled()
        self._lease = None
        self._uploadId = None
        self._audit("taken over")
        self._end()

    async def _park(self) -> None:
        waiting = Deferred.fromCoroutine(self._settled())
        waiting.addTimeout(PARK_WAIT, self.budget.clock)
        settled = True
        try:
            await waiting
        except Exception:
            # A part still in flight could land after a resume had sent
            # its own: the upload is aborted rather than parked.
            log.warn("Parts of {key} in flight after {wait:g} s", key=self.key, wait=PARK_WAIT)
            settled = False
        lease = self._lease
        checkpoints = self._confirmedCheckpoints()
        record = None
        if settled and lease is not None and self._uploadId is not None and checkpoints:
            lease.record = evolve(lease.record, mtime=self.mtime)
            try:
                record = await lease.park(checkpoints)
            except Changed:
                # Another session took it over: it is theirs.
                await self._leave()
                return
        if record is None:
            await self._abortUpload()
            return
        self._lease = None
        self._end()
        self._audit("parked", stored=record.stored)
        if self.onParked is not None and lease is not None and lease.etag is not None:
            self.onParked(record, lease.etag)

    def _confirm(self, part: StoredPart) -> None:
        """
        S3 stored C{part}: the lease's next write records the hash state up
        to the last part boundary before which every part is stored.
        """
        self._confirmed[part.number] = part.checksum or ""
        while self._contiguous + 1 in self._confirmed:
            self._contiguous += 1
            if self._lease is not None:
                self._lease.checksums.append(self._confirmed[self._contiguous])
        if self._lease is not None:
            self._lease.checkpoint(self._confirmedCheckpoints())

    def _confirmedCheckpoints(self) -> list[Checkpoint]:
        return [c for c in self.planner.checkpoints if c.parts <= self._contiguous]

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
        self._fail(UploadFailed(reason), "aborted")
        assert self._aborting is not None
        return self._aborting

    @sftpOperation("read")
    async def readChunk(self, offset: int, length: int) -> bytes:
        raise NotSupported("file is open for writing only")

    @sftpOperation("fstat")
    async def getAttrs(self) -> dict[str, int]:
        return self.attributes()

    @sftpOperation("fsetstat")
    async def setAttrs(self, attrs: dict[str, int]) -> None:
        self.changeAttributes(attrs)

    @sftpOperation("close")
    async def _close(self) -> None:
        if self._appending is not None:
            # The stored file's tail must be in place before the last part.
            await whenSettled(self._appending)
        self._checkWritable()
        try:
            if (
                self.replaces is not None
                and self.planner.received < self.replaces
                and not self._sizeSet
            ):
                raise NotSupported(
                    "only the start of an existing file was overwritten, and "
                    "an S3 object cannot keep its old end: open the file "
                    "with truncation to replace it"
                )
            plan = self.planner.finish()
            self._startHashing()
            if isinstance(plan, SinglePut):
                self._partBytes += len(plan.data)
                try:
                    await self._hashedThrough(None)
                    self._checkWritable()
                    stored = await self.store.putObject(
                        self.key, plan.data, self._metadata(), self.settings, self.exclusive
                    )
                finally:
                    self._partBytes -= len(plan.data)
                    self.planner.recycle(plan.data)
                    self._credit()
                if self._uploadId is not None:
                    # A resumed upload written anew from 0, short enough
                    # for one PutObject: its multipart upload is not needed.
                    await self._dropUpload()
            else:
                stored = await self._finishMultipart(plan)
        except GatewayError as e:
            self._fail(e)
            raise UploadFailed(f"upload failed: {e.message}") from e
        except Exception:
            # Unexpected: the caller logs it; the upload must still end.
            self._fail(UploadFailed("internal error"))
            raise
        self._completed = True
        self._end()
        if self.onStored is not None:
            self.onStored(self.key, self.attributes())
        self._audit(
            "stored",
            sha256=self.planner.sha256,
            etag=stored.etag,
            versionId=stored.versionId,
        )

    def _audit(self, outcome: str, **fields: object) -> None:
        """
        Record the upload's outcome in the audit trail.
        """
        audit(
            "upload",
            warn=outcome != "stored",
            outcome=outcome,
            user=self.owner,
            path=self.path,
            bucket=self.store.bucket,
            key=self.key,
            bytes=self.planner.received,
            parts=max(1, self.planner.partsPlanned),
            seconds=self.now() - self._started,
            **fields,
        )

    def _metadata(self) -> dict[str, str]:
        """
        @return: the object's metadata: its hashes (once every byte is
            hashed), its uploader, and the time the client set.
        """
        metadata = {**hashMetadata(self.planner.hashes), UPLOADER: self.owner}
        if self.mtime is not None:
            metadata["mtime"] = str(self.mtime)
        return metadata

    async def _finishMultipart(self, plan: FinalPart) -> StoredObject:
        if plan.part is not None:
            self._enqueue([plan.part])
        await self._settled()
        await self._hashedThrough(None)
        self._checkWritable()
        metadata = self._metadata()
        assert self._uploadId is not None
        completed = await self.store.completeMultipartUpload(
            self.key, self._uploadId, self._stored, self.exclusive
        )
        # The upload id is spent: from here a failure deletes the object.
        self._uploadId = None
        self._endLease()
        # S3 fixes an upload's metadata when it begins, before the hash is
        # known: record it with a copy of the object onto itself.
        try:
            return await self.store.copyObject(
                self.key,
                self.key,
                completed.etag,
                self.planner.received,
                metadata,
                self.settings or ObjectSettings(),
            )
        except Exception:
            try:
                await self.store.deleteObject(self.key)
            except Exception as e:
                log.error(
                    "Could not delete {key} after failing to record its checksum: {reason}",
                    key=self.key,
                    reason=getattr(e, "message", None) or repr(e),
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
        self._startHashing()
        for part in parts:
            self._queue.append(part)
            self._partBytes += len(part.data)
        self._pump()

    def _startHashing(self) -> None:
        """
        Hash what the planner has cut since, in order: small pieces at once,
        others on a worker thread (L{offload}).
        """
        self._hashQueue.extend(self.planner.takeHashWork())
        if self._hashQueue and not self._hashing:
            self._hashing = True
            Deferred.fromCoroutine(self._hashAll())

    async def _hashAll(self) -> None:
        try:
            # The planner is replaced only at the first WRITE (a resume at a
            # boundary), before anything was cut: all its work is this one's.
            planner = self.planner
            while self._hashQueue:
                work = self._hashQueue.popleft()
                if self.offload is None or len(work.data) < INLINE_HASH:
                    state = planner.hash(work)
                else:
                    state = await self.offload(planner.hash, work)
                planner.hashed(work, state)
                # The end of the file comes with its last part.
                hashed = planner.partsPlanned if work.parts is None else work.parts
                self._hashedParts = max(self._hashedParts, hashed)
                if self._lease is not None and state is not None:
                    # Its parts may have been stored before they were hashed.
                    self._lease.checkpoint(self._confirmedCheckpoints())
                self._wake()
        except Exception as e:
            log.failure("Hashing {key} failed", Failure(e), key=self.key)
            self._hashQueue.clear()
            self._hashedParts = self.policy.limits.maxParts + 1
            self._fail(UploadFailed("internal error"))
        finally:
            self._hashing = False
            self._wake()

    def _wake(self) -> None:
        """
        Fire the waiters of L{_hashedThrough} whose wait is over.
        """
        waiters, self._hashWaiters = self._hashWaiters, []
        for through, waiter in waiters:
            if self._hashedBy(through):
                waiter.callback(None)
            else:
                self._hashWaiters.append((through, waiter))

    def _hashedBy(self, parts: int | None) -> bool:
        """
        @return: whether the hashes have taken in C{parts} parts, or, for
            L{None}, everything cut so far.
        """
        if parts is None:
            return not (self._hashing or self._hashQueue)
        return parts <= self._hashedParts

    async def _hashedThrough(self, parts: int | None) -> None:
        """
        Wait until the hashes have taken in C{parts} parts (a part's buffer
        is not reused before), or, for L{None}, everything cut so far.
        """
        if self._hashedBy(parts):
            return
        waiter: Deferred[None] = Deferred()
        self._hashWaiters.append((parts, waiter))
        await waiter

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
            await self._createUpload()
        except Exception as e:
            self._partFailed(e)
        finally:
            self._creating = False
        self._pump()

    async def _createUpload(self) -> None:
        """
        Create the multipart upload, and its lease.
        """
        settings = None if self.settings is None else self.settings.staging
        self._uploadId = await self.store.createMultipartUpload(self.key, settings)
        if self.leases is not None:
            schedule = self.planner.schedule
            self._lease = self.leases.track(
                LeaseRecord(
                    self.key,
                    self._uploadId,
                    user=self.owner,
                    path=self.path,
                    partSize=schedule.initial,
                    limits=schedule.limits,
                    checkpoints=self._confirmedCheckpoints(),
                    mtime=self.mtime,
                    changed=self.now(),
                )
            )
            self._lease.onLost = self._taken

    async def _send(self, part: Part) -> None:
        assert self._uploadId is not None
        try:
            stored = await self.store.uploadPart(self.key, self._uploadId, part.number, part.data)
            self._stored.append(stored)
            self._confirm(stored)
        except Exception as e:
            self._partFailed(e)
        # Its buffer is the hashes' until they have taken it in: the part
        # counts as in flight till then (for the concurrency, for memory,
        # and for whoever waits for the upload to settle).
        await self._hashedThrough(part.number)
        self._inFlight -= 1
        self._partBytes -= len(part.data)
        self.planner.recycle(part.data)
        self._credit()
        self._pump()

    def _partFailed(self, error: Exception) -> None:
        if not isinstance(error, GatewayError):
            log.failure("Unexpected error uploading {key}", Failure(error), key=self.key)
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

    def _fail(self, error: GatewayError, outcome: str = "failed") -> None:
        """
        Record the first failure, drop what is held and start aborting.

        @param outcome: C{"failed"}, or C{"aborted"} when the upload was
            discarded on purpose (connection lost, file removed).
        """
        if self._failure is not None or self._completed:
            if self._aborting is None:
                self._aborting = succeed(None)
            return
        self._failure = error
        self._audit(outcome, reason=getattr(error, "storeCode", "") or error.message)
        self.planner.discard()
        self._pump()
        self._aborting = Deferred.fromCoroutine(self._abortUpload())

    async def _abortUpload(self) -> None:
        await self._settled()
        if self._closing is not None:
            # A CLOSE under way may already be completing the upload: let
            # it reach its end rather than abort an upload S3 is finishing.
            # It fails unless it got that far; then the object stays (a
            # remove deletes it after this).
            await whenSettled(self._closing)
        if self._uploadId is not None:
            try:
                await self.store.abortMultipartUpload(self.key, self._uploadId)
            except Exception as e:
                log.error(
                    "Could not abort upload {uploadId} of {key}: {reason}; "
                    "the orphan sweep or a lifecycle rule will remove it",
                    uploadId=self._uploadId,
                    key=self.key,
                    reason=getattr(e, "message", None) or repr(e),
                )
                self._endLease(keepMarker=True)
            else:
                self._endLease()
        self._end()

    async def _dropUpload(self) -> None:
        """
        Abort the multipart upload this file no longer needs, and end its
        lease.
        """
        assert self._uploadId is not None
        uploadId, self._uploadId = self._uploadId, None
        try:
            await self.store.abortMultipartUpload(self.key, uploadId)
        except Exception as e:
            log.warn(
                "Could not abort upload {uploadId} of {key}: {reason}",
                uploadId=uploadId,
                key=self.key,
                reason=getattr(e, "message", None) or repr(e),
            )
            self._endLease(keepMarker=True)
        else:
            self._endLease()

    def _endLease(self, keepMarker: bool = False) -> None:
        if self._lease is not None:
            self._lease.end(keepMarker)
            self._lease = None

    def _end(self) -> None:
        """
        Give back the memory and any window still charged, once.
        """
        if self._ended:
            return
        self._ended = True
        if self.uploads is not None:
            self.uploads.discard(self)
        if self._charged:
            self.budget.release(self._charged)
            self._charged = 0
        self.budget.close()

    def _refuse(self, operation: str, error: GatewayError) -> Deferred[None]:
        return fail(sftpError(Failure(error), operation, self.key))


@define(eq=False)
class ActiveUploads:
    """
    The uploads under way on this server, by S3 key: what C{stat}, C{ls}
    and C{remove} of a file being uploaded see.  Other servers on the same
    bucket do not see them (their objects do not exist yet).

    When two uploads of one key overlap, C{stat} and C{ls} see the later
    one and C{remove} aborts both.

    @ivar draining: set when the server shuts down: no new upload may
        start (L{twisted_s3sftp.ops.drain}).
    @ivar started: how many uploads have started, for metrics.
    """

    draining: bool = False
    started: int = 0
    _byKey: dict[str, list[UploadFile]] = field(factory=dict, init=False)
    _emptyWaiters: list[Deferred[None]] = field(factory=list, init=False)
    _replies: int = field(default=0, init=False)
    _reads: int = field(default=0, init=False)
    _readWaiters: list[Deferred[None]] = field(factory=list, init=False)

    def __len__(self) -> int:
        return sum(len(uploads) for uploads in self._byKey.values())

    def add(self, upload: UploadFile) -> None:
        """
        List C{upload} until it ends.
        """
        self.started += 1
        self._byKey.setdefault(upload.key, []).append(upload)

    def discard(self, upload: UploadFile) -> None:
        """
        Stop listing C{upload}, if it is listed.
        """
        uploads = self._byKey.get(upload.key, [])
        if upload in uploads:
            uploads.remove(upload)
            if not uploads:
                del self._byKey[upload.key]
        self._maybeEmpty()

    def holdReply(self) -> None:
        """
        A CLOSE of an upload was received: until its reply has been
        written (L{releaseReply}), the server is not done with uploads,
        even once the upload itself has ended.
        """
        self._replies += 1

    def releaseReply(self) -> None:
        """
        The reply to a CLOSE counted by L{holdReply} has been written.
        """
        self._replies -= 1
        self._maybeEmpty()

    @property
    def reads(self) -> int:
        """
        Downloads and listings open now (L{holdRead}).
        """
        return self._reads

    def holdRead(self) -> None:
        """
        A file was opened for reading, or a directory for listing: a
        shutdown lets it finish, within its drain timeout, until
        L{releaseRead}.  Kept here, beside the uploads, because the drain
        waits for both.
        """
        self._reads += 1

    def releaseRead(self) -> None:
        """
        A handle counted by L{holdRead} was closed, or its connection lost.
        """
        self._reads -= 1
        if not self._reads:
            waiters, self._readWaiters = self._readWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def whenReadsDone(self) -> Deferred[None]:
        """
        @return: a Deferred firing once no download or listing is open.
        """
        if not self._reads:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._readWaiters.remove(d))
        self._readWaiters.append(waiter)
        return waiter

    def _maybeEmpty(self) -> None:
        if not self._byKey and not self._replies:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def get(self, key: str) -> UploadFile | None:
        """
        @return: the latest upload under way to C{key}, or L{None}.
        """
        uploads = self._byKey.get(key)
        return uploads[-1] if uploads else None

    def every(self, key: str | None = None) -> list[UploadFile]:
        """
        @return: all the uploads under way to C{key} (to any key if
            L{None}), oldest first.
        """
        if key is not None:
            return list(self._byKey.get(key, ()))
        return [upload for uploads in self._byKey.values() for upload in uploads]

    def whenEmpty(self) -> Deferred[None]:
        """
        @return: a Deferred firing once no upload is under way and every
            CLOSE of one has been answered.
        """
        if not self._byKey and not self._replies:
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._emptyWaiters.remove(d))
        self._emptyWaiters.append(waiter)
        return waiter

    def under(self, prefix: str) -> Iterator[UploadFile]:
        """
        @param prefix: a directory prefix, ending in C{/} (or empty).
        @return: the latest upload to each key directly under C{prefix}.
        """
        for key, uploads in list(self._byKey.items()):
            if key.startswith(prefix) and "/" not in key[len(prefix) :]:
                yield uploads[-1]


async def whenSettled(d: Deferred[Any]) -> None:
    """
    Wait for C{d} to fire, whatever its outcome, without consuming it.
    """
    waiter: Deferred[None] = Deferred()

    def fired(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(fired)
    await waiter
