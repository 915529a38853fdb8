"""
Downloads: an object read back with ranged GETs and a bounded read-ahead.

A client reading a file sequentially (each READ starting where an earlier
one ended, as every client's pipelined download does) gets blocks of
L{BLOCK_SIZE} fetched ahead of it, up to L{READ_AHEAD} blocks past its
latest READ; blocks it has passed are dropped.  Any other READ (a
C{reget}, a client seeking about) is answered with a ranged GET of exactly
the bytes asked for.  A download therefore holds at most
C{(READ_AHEAD + 2) * BLOCK_SIZE} bytes of blocks, which it reserves from
the server's memory limit when it is opened, plus the READ replies not
yet sent, which the SFTP protocol bounds per session
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

#: Bytes fetched by one read-ahead GET.
BLOCK_SIZE = 1024 * 1024

#: How many blocks past the latest READ are fetched ahead.
READ_AHEAD = 4


def downloadReservation() -> int:
    """
    @return: the memory a download reserves: its read-ahead blocks, the
        block being read and the one before it.
    """
    return (READ_AHEAD + 2) * BLOCK_SIZE


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
    _data: dict[int, bytes] = field(factory=dict, init=False)
    _waiters: dict[int, list[Deferred[bytes]]] = field(factory=dict, init=False)
    _floor: int = field(default=0, init=False)
    _next: int = field(default=0, init=False)
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
        self._readAhead(first)
        blocks = await gatherResults(
            [self._block(index) for index in range(first, last + 1)],
            consumeErrors=True,
        ).addErrback(_firstFailure)
        data = b"".join(blocks)
        start = offset - first * BLOCK_SIZE
        self._sent += min(length, len(data) - start)
        return data[start : start + length]

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
        self._floor = -(-self.info.size // BLOCK_SIZE)
        self.budget.close()

    def _block(self, index: int) -> Deferred[bytes]:
        """
        @return: a Deferred firing with block C{index}, fetched if need be.
        """
        data = self._data.get(index)
        if data is not None:
            return succeed(data)
        result: Deferred[bytes] = Deferred()
        self._start(index).append(result)
        return result

    def _start(self, index: int) -> list[Deferred[bytes]]:
        """
        Fetch block C{index} unless it is being fetched.

        @return: the Deferreds waiting for it.
        """
        waiters = self._waiters.get(index)
        if waiters is None:
            waiters = self._waiters[index] = []
            Deferred.fromCoroutine(self._fetch(index))
        return waiters

    async def _fetch(self, index: int) -> None:
        start = index * BLOCK_SIZE
        length = min(BLOCK_SIZE, self.info.size - start)
        try:
            data = await self.store.getObject(self.key, start, length, self.info.etag)
        except Exception:
            failure = Failure()
            for waiter in self._waiters.pop(index):
                waiter.errback(failure)
            return
        if index >= self._floor:
            self._data[index] = data
        for waiter in self._waiters.pop(index):
            waiter.callback(data)

    def _readAhead(self, first: int) -> None:
        """
        Drop the blocks before C{first - 1}; fetch up to L{READ_AHEAD}
        blocks after C{first}.
        """
        self._floor = max(self._floor, first - 1)
        for index in [index for index in self._data if index < self._floor]:
            del self._data[index]
        blocks = -(-self.info.size // BLOCK_SIZE)
        for index in range(first, min(blocks, first + READ_AHEAD + 1)):
            if index not in self._data:
                self._start(index)


def _firstFailure(failure: Failure) -> Failure:
    """
    @param failure: a L{FirstError} from L{gatherResults}.
    @return: the failure of the block that failed first.
    """
    error = failure.value
    assert isinstance(error, FirstError)
    return error.subFailure
