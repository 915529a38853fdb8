"""
Downloads: an object read back with ranged GETs and a bounded read-ahead.

A client reading a file sequentially (each READ starting where an earlier
one ended, as every client's pipelined download does) gets the object
fetched ahead of it in spans of whole L{BLOCK_SIZE} blocks: the first span
is one block and each next one twice the last, up to L{MAX_SPAN} blocks
(8 MiB, the default part size) or a third of the download's memory
reservation, whichever is less, so a small or briefly read file costs one
small GET and a long download few large ones (1 MiB GETs cost about 1
CPU-s per GiB in botocore alone).  Spans are fetched while they start
within L{READ_AHEAD} blocks, or the last span's size, of the latest READ,
and only while the spans held fit the reservation; blocks the reader has
passed are dropped, and a span's memory goes once all its blocks have.
Any other READ (a C{reget}, a client seeking about) is answered with a
ranged GET of exactly the bytes asked for.

A download reserves L{downloadReservation} from the server's memory limit
when it is opened: what three of the largest spans take, or, when memory
is short, at least what one-block spans need; the READ replies not yet
sent are bounded per session by the SFTP protocol
(L{twisted_s3sftp.sftp.extensions.MAX_OUTGOING}).

Every GET names the ETag the object had when the file was opened: a file
replaced during a download fails the next READ instead of mixing two
versions.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field
from twisted.conch.interfaces import ISFTPFile
from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import EndOfFile, NotSupported
from ..ops.audit import audit
from ..store.interfaces import IObjectStore, ObjectInfo
from .attributes import fileAttributes, modificationTime
from .extensions import MAX_READ
from .status import sftpOperation
from .upload import MemoryBudget

#: The unit of read-ahead: spans are whole blocks, aligned to blocks.
BLOCK_SIZE = 1024 * 1024

#: How many blocks past the latest READ a span may start, at least.
READ_AHEAD = 4

#: The most blocks one read-ahead GET fetches.
MAX_SPAN = 8


def downloadReservation() -> tuple[int, int]:
    """
    @return: C{(minimum, wanted)}, the memory a download reserves: at
        least its read-ahead in single blocks, the block being read and
        the one before it; at best three spans of L{MAX_SPAN} blocks (the
        one being read, and two ahead).
    """
    return (READ_AHEAD + 2) * BLOCK_SIZE, 3 * MAX_SPAN * BLOCK_SIZE


@define(eq=False)
class _Span:
    """
    Blocks fetched by one GET, held until the reader has passed them all.

    @ivar start: its first block.
    @ivar end: the block after its last.
    @ivar size: its bytes.
    """

    start: int
    end: int
    size: int


@implementer(ISFTPFile)
@define(eq=False)
class DownloadFile:
    """
    One file open for reading.

    @ivar store: where the object is.
    @ivar info: the object as it was when opened (size, ETag, metadata).
    @ivar budget: the memory reserved for the read-ahead.
    @ivar owner: the user, for the audit trail.
    @ivar path: the path the client opened, for the audit trail.
    @ivar now: the clock, for the download's duration.
    """

    store: IObjectStore
    info: ObjectInfo
    budget: MemoryBudget
    owner: str = ""
    path: str = ""
    now: Callable[[], float] = lambda: 0.0
    _data: dict[int, bytes | memoryview] = field(factory=dict, init=False)
    _waiters: dict[int, list[Deferred[bytes | memoryview]]] = field(factory=dict, init=False)
    _spans: list[_Span] = field(factory=list, init=False)
    _floor: int = field(default=0, init=False)
    _next: int = field(default=0, init=False)
    # The next block a span fetches, and the size in blocks of the span
    # before it (0 at the start of a sequential run).
    _ahead: int = field(default=0, init=False)
    _lastSpan: int = field(default=0, init=False)
    _sent: int = field(default=0, init=False)
    _ended: bool = field(default=False, init=False)
    _started: float = field(init=False)

    @_started.default
    def _startTime(self) -> float:
        return self.now()

    @property
    def key(self) -> str:
        """
        The object's key.
        """
        return self.info.key

    @sftpOperation("read")
    async def readChunk(self, offset: int, length: int) -> bytes:
        size = self.info.size
        if offset >= size or length <= 0:
            raise EndOfFile("end of file")
        length = min(length, MAX_READ, size - offset)
        end = offset + length
        first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
        if offset != self._next and first not in self._data:
            # Not where a sequential reader would be: no read-ahead, but
            # the next READ, if it follows this one, starts it.
            self._next = end
            data = await self.store.getObject(self.key, offset, length, self.info.etag)
            self._sent += len(data)
            return data
        self._next = max(self._next, end)
        self._readAhead(first, last)
        blocks = await gatherResults(
            [self._block(index) for index in range(first, last + 1)],
            consumeErrors=True,
        ).addErrback(_firstFailure)
        # The reply is copied once, from the blocks' views.
        pieces = []
        start, wanted = offset - first * BLOCK_SIZE, length
        for block in blocks:
            piece = memoryview(block)[start : start + wanted]
            pieces.append(piece)
            wanted -= len(piece)
            start = 0
        data = b"".join(pieces)
        self._sent += len(data)
        return data

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        return self._refuseWrite()

    @sftpOperation("write")
    async def _refuseWrite(self) -> None:
        raise NotSupported("file is open for reading only")

    @sftpOperation("fstat")
    async def getAttrs(self) -> dict[str, int]:
        return fileAttributes(self.info.size, modificationTime(self.info))

    @sftpOperation("fsetstat")
    async def setAttrs(self, attrs: dict[str, int]) -> None:
        # A file open for reading keeps its attributes; accepted so that
        # clients which set them on every handle do not fail.
        return None

    def close(self) -> Deferred[None]:
        self.abort()
        return succeed(None)

    def abort(self, reason: str = "") -> None:
        """
        Drop the blocks and give the memory back; record the download in
        the audit trail, once.
        """
        if not self._ended:
            self._ended = True
            audit(
                "download",
                user=self.owner,
                path=self.path,
                bucket=self.store.bucket,
                key=self.key,
                bytes=self._sent,
                size=self.info.size,
                seconds=self.now() - self._started,
            )
        self._data.clear()
        self._spans.clear()
        self._floor = -(-self.info.size // BLOCK_SIZE)
        self.budget.close()

    @property
    def held(self) -> int:
        """
        The bytes of the spans held (fetched or being fetched).
        """
        return sum(span.size for span in self._spans)

    def _block(self, index: int) -> Deferred[bytes | memoryview]:
        """
        @return: a Deferred firing with block C{index}: held, on its way,
            or (a block behind the read-ahead, after the reader went back)
            fetched alone and not kept.
        """
        data = self._data.get(index)
        if data is not None:
            return succeed(data)
        result: Deferred[bytes | memoryview] = Deferred()
        waiters = self._waiters.get(index)
        if waiters is None:
            self._fetch(_Span(index, index + 1, self._blockBytes(index, 1)), held=False)
            waiters = self._waiters[index]
        waiters.append(result)
        return result

    def _blockBytes(self, index: int, count: int) -> int:
        """
        @return: the bytes of C{count} blocks from block C{index}.
        """
        start = index * BLOCK_SIZE
        return min(count * BLOCK_SIZE, self.info.size - start)

    def _fetch(self, span: _Span, held: bool = True) -> None:
        """
        Start the GET of C{span}'s blocks; with C{held}, keep them (and
        count them) until the reader has passed them.
        """
        for index in range(span.start, span.end):
            self._waiters[index] = []
        if held:
            self._spans.append(span)
        Deferred.fromCoroutine(self._get(span, held))

    async def _get(self, span: _Span, held: bool) -> None:
        start = span.start * BLOCK_SIZE
        try:
            data = await self.store.getObject(self.key, start, span.size, self.info.etag)
        except Exception:
            failure = Failure()
            if span in self._spans:
                self._spans.remove(span)
            for index in range(span.start, span.end):
                for waiter in self._waiters.pop(index, []):
                    waiter.errback(failure)
            return
        view = memoryview(data)
        keep = held and span in self._spans
        for index in range(span.start, span.end):
            at = (index - span.start) * BLOCK_SIZE
            block = view[at : at + BLOCK_SIZE]
            if keep and index >= self._floor:
                self._data[index] = block
            for waiter in self._waiters.pop(index, []):
                waiter.callback(block)

    def _readAhead(self, first: int, last: int) -> None:
        """
        Drop what lies before block C{first - 1}; fetch the spans the
        READ of blocks C{first} to C{last} needs, and those that start
        close enough ahead of it and fit the reservation.
        """
        floor = self._floor = max(self._floor, first - 1)
        for index in [index for index in self._data if index < floor]:
            del self._data[index]
        self._spans = [span for span in self._spans if span.end > floor]
        if self._ahead < first and first not in self._waiters:
            # The reader moved past the read-ahead: start again from it,
            # small.
            self._ahead, self._lastSpan = first, 0
        blocks = -(-self.info.size // BLOCK_SIZE)
        largest = max(1, min(MAX_SPAN, self.budget.reserved // (3 * BLOCK_SIZE)))
        held = self.held
        while self._ahead < blocks:
            needed = self._ahead <= last
            if not needed and self._ahead > first + max(READ_AHEAD, self._lastSpan):
                break
            count = min(max(1, 2 * self._lastSpan), largest, blocks - self._ahead)
            size = self._blockBytes(self._ahead, count)
            if not needed and held + size > self.budget.reserved:
                break
            self._fetch(_Span(self._ahead, self._ahead + count, size))
            held += size
            self._ahead += count
            self._lastSpan = count


def _firstFailure(failure: Failure) -> Failure:
    """
    @param failure: a L{FirstError} from L{gatherResults}.
    @return: the failure of the block that failed first.
    """
    error = failure.value
    assert isinstance(error, FirstError)
    return error.subFailure
