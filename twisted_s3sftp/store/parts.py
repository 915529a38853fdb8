"""
Sans-I/O planning of one upload: bytes in, S3 parts out.

L{PartPlanner} is fed the client's writes in the order they arrive and
answers with the parts that are ready to send.  It holds back a full part
until at least one byte beyond it has arrived, so that:

  - a file of at most one part is a single PutObject at CLOSE
    (L{SinglePut}), including the empty file;
  - a larger file is a multipart upload whose last part is never empty
    (L{FinalPart}).

Part sizes follow a L{PartSchedule}: they start at the configured size
and double every C{maxParts // GROWTH_STEPS} parts (909 with S3's limits),
up to S3's 5 GiB maximum, so a stream of unknown length never runs out of
part numbers before the largest object the schedule can reach
(L{PartSchedule.largestFile}: 9.3 TiB from a 5 MiB start, at least S3's
classic 5 TiB object limit from any start).  AWS has since raised the
object limit to 48.8 TiB, which only 10,000 parts of 5 GiB reach: that
needs the size known in advance, which SFTP does not give.

Writes need not arrive in order: a write that lands in a part still held
in memory is placed where it belongs, and gaps are filled by later
writes.  A write into bytes already sent to S3, or one that would make
the planner hold more than its capacity, is refused with
L{NotSupported}; a file that still has a gap at CLOSE is refused with
L{UploadFailed}.

The whole file's hashes (L{FileHashes}: SHA-256 and those configured) are
computed as parts are cut, in file order: at once, or, for a planner made
with C{deferHashing}, by whoever takes the L{HashWork} it leaves (the
upload, on a worker thread, so that hashing a part does not hold up the
reactor).

A planner given a L{BufferPool} fills the part to be sent next (the
first part once it holds more than L{POOLED_FROM}) in a part-sized buffer
from the pool, which
the upload gives back once S3 has the part: an upload then writes into
memory already mapped instead of faulting in a fresh 8 MiB every part.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import re
from collections import deque

from attrs import define, field, frozen

from ..errors import NotSupported, UploadFailed
from .hashes import FileHashes

MiB = 1024 * 1024

_SIZE = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024 * 1024 * MiB}


def parseSize(text: str) -> int:
    """
    Parse a byte count such as C{8388608}, C{8M}, C{8MiB}, C{64k} or C{2TiB}.

    @param text: the option's value.
    @return: the number of bytes (units are powers of 1024).
    @raise ValueError: if C{text} is not a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 8MiB)")
    number, unit = match.groups()
    return int(number) * _UNITS[(unit or "")[:1].upper()]


#: The hashes kept with each object by default (C{--hashes}): SHA-256, and
#: MD5, the one rclone verifies each upload with.
DEFAULT_HASHES = ("sha256", "md5")


#: S3's smallest non-final part.
MIN_PART_SIZE = 5 * MiB

#: S3's largest part.
MAX_PART_SIZE = 5 * 1024 * MiB

#: S3's largest part number.
MAX_PARTS = 10_000

#: How many times the part size may double over one upload: eleven
#: doublings take S3's 5 MiB minimum past its 5 GiB maximum.
GROWTH_STEPS = 11


#: The first part is moved into a pooled buffer once it holds more than
#: this, so that a small file never takes a part-sized buffer; later parts
#: take theirs at their first byte.
POOLED_FROM = 1 * MiB


@define(eq=False)
class BufferPool:
    """
    Part buffers kept for reuse between uploads.

    A new multi-megabyte C{bytearray} costs a page fault for every 4 KiB
    the first time it is written, and is unmapped again when freed:
    measured here, that was a tenth of the server's CPU per GiB uploaded.
    A buffer taken from the pool may hold another upload's bytes; the
    planner only ever sends bytes it received (a part with a gap is never
    sent), so they never leave it.

    @ivar limit: the most bytes of idle buffers kept; a buffer given back
        beyond it is freed.
    @ivar idle: bytes of idle buffers kept now.
    """

    limit: int = 64 * MiB
    idle: int = field(default=0, init=False)
    _free: dict[int, list[bytearray]] = field(factory=dict, init=False, repr=False)

    def take(self, size: int) -> bytearray:
        """
        @return: a buffer of exactly C{size} bytes, of unspecified content.
        """
        free = self._free.setdefault(size, [])
        if free:
            self.idle -= size
            return free.pop()
        return bytearray(size)

    def give(self, buffer: bytes | bytearray) -> None:
        """
        Keep C{buffer} for reuse, if it came from L{take} and there is room.
        """
        size = len(buffer)
        free = self._free.get(size)
        if free is None or not isinstance(buffer, bytearray) or self.idle + size > self.limit:
            return
        free.append(buffer)
        self.idle += size


@frozen
class PartLimits:
    """
    The object store's multipart limits (S3's by default; tests shrink
    them to watch the schedule at work).

    @ivar minPartSize: the smallest non-final part.
    @ivar maxPartSize: the largest part.
    @ivar maxParts: the largest part number.
    """

    minPartSize: int = MIN_PART_SIZE
    maxPartSize: int = MAX_PART_SIZE
    maxParts: int = MAX_PARTS


@frozen
class PartSchedule:
    """
    The size of every part of an upload, known before its length is.

    @ivar initial: the size of the first parts.
    @ivar limits: the store's limits.
    """

    initial: int = field()
    limits: PartLimits = PartLimits()

    @initial.validator
    def _check(self, attribute: object, value: int) -> None:
        if not self.limits.minPartSize <= value <= self.limits.maxPartSize:
            raise ValueError(
                f"part size must be between {self.limits.minPartSize} and "
                f"{self.limits.maxPartSize} bytes"
            )

    @property
    def partsPerSize(self) -> int:
        """
        @return: how many parts are planned at each size before it doubles.
        """
        return max(1, self.limits.maxParts // GROWTH_STEPS)

    def sizeOf(self, number: int) -> int:
        """
        @param number: a part number, from 1.
        @return: the size of that part (the last part may be shorter).
        """
        doublings = min((number - 1) // self.partsPerSize, 48)
        return min(self.limits.maxPartSize, self.initial << doublings)

    def startOf(self, number: int) -> int:
        """
        @param number: a part number, from 1.
        @return: the file offset at which that part begins.
        """
        offset, first = 0, 1
        while first < number:
            last = min(number, first + self.partsPerSize)
            offset += (last - first) * self.sizeOf(first)
            first = last
        return offset

    @property
    def largestFile(self) -> int:
        """
        @return: the largest file this schedule can carry.
        """
        return self.startOf(self.limits.maxParts + 1)


@frozen
class UploadPolicy:
    """
    How uploads use memory and S3.

    @ivar partSize: the size of the first parts (L{PartSchedule.initial}).
    @ivar bufferLimit: the most one upload should hold in memory.
    @ivar concurrency: how many parts of one upload may be in flight to S3.
    @ivar memoryWait: seconds an upload waits for memory before it fails.
    @ivar limits: the store's multipart limits.
    @ivar hashes: the whole-file hashes kept with each object
        (L{twisted_s3sftp.store.hashes}; SHA-256 always).
    """

    partSize: int = 8 * MiB
    bufferLimit: int = 64 * MiB
    concurrency: int = 4
    memoryWait: float = 30.0
    limits: PartLimits = PartLimits()
    hashes: tuple[str, ...] = DEFAULT_HASHES


@frozen
class Part:
    """
    One part of a multipart upload.

    @ivar number: the S3 part number, from 1.
    @ivar data: its bytes.
    """

    number: int
    data: bytes | bytearray = field(repr=lambda data: f"<{len(data)} bytes>")


@frozen
class SinglePut:
    """
    The whole upload fits one PutObject.

    @ivar data: the file's bytes (possibly none).
    """

    data: bytes | bytearray = field(repr=lambda data: f"<{len(data)} bytes>")


@frozen
class FinalPart:
    """
    The upload was multipart; this is its last part.

    @ivar part: the last part, never empty; L{None} when a resumed upload
        was closed with nothing written after the parts already stored.
    """

    part: Part | None


@define(eq=False)
class _PendingPart:
    """
    A part still in memory, possibly with gaps.

    @ivar number: its part number.
    @ivar start: the file offset where it begins.
    @ivar size: its full size.
    @ivar data: the bytes so far; gaps are zero until filled.  It may be
        longer than L{filled} (a pooled buffer is the part's full size).
    @ivar filled: how much of L{data} is in use: the end of the furthest
        write into the part.
    @ivar ranges: the received byte ranges, relative to C{start}, sorted
        and merged.
    """

    number: int
    start: int
    size: int
    data: bytearray = field(factory=bytearray)
    filled: int = 0
    ranges: list[list[int]] = field(factory=list)

    def put(self, at: int, chunk: memoryview, buffers: BufferPool | None) -> None:
        """
        Place C{chunk} at C{at} bytes into the part.

        @param buffers: where to take a part-sized buffer from once the
            part grows past L{POOLED_FROM}, or L{None} to grow as needed.
        """
        end = at + len(chunk)
        ranges = self.ranges
        inOrder = len(ranges) == 1 and ranges[0][0] == 0 and ranges[0][1] == at == self.filled
        data = self.data
        if end > len(data):
            if buffers is not None and (end > POOLED_FROM or self.number > 1):
                # Past the first part the file is known to be large.
                pooled = buffers.take(self.size)
                pooled[: self.filled] = memoryview(data)[: self.filled]
                self.data = data = pooled
            elif inOrder:
                # The common case for a small file: append.
                data += chunk
                ranges[0][1] = self.filled = end
                return
            else:
                data += bytes(end - len(data))
        data[at:end] = chunk
        self.filled = max(self.filled, end)
        if inOrder:
            ranges[0][1] = end
            return
        merged: list[list[int]] = []
        for lo, hi in sorted([*ranges, [at, end]]):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.ranges = merged

    def contiguous(self) -> int:
        """
        @return: how many bytes from the part's start have been received
            without a gap.
        """
        if self.ranges and self.ranges[0][0] == 0:
            return self.ranges[0][1]
        return 0

    def content(self) -> bytes | bytearray:
        """
        @return: the part's bytes: L{data} itself when it is all in use,
            else a copy of what is.
        """
        if len(self.data) == self.filled:
            return self.data
        return bytes(memoryview(self.data)[: self.filled])


#: The part boundaries a planner keeps the hash state of, the most recent
#: last (a resume may start at any of them).
CHECKPOINTS = 16


@frozen
class Checkpoint:
    """
    The whole file's hash state at a part boundary: what a resumed upload
    restarts from (L{twisted_s3sftp.store.hashes}).

    @ivar parts: the parts before the boundary.
    @ivar offset: the boundary's offset in the file.
    @ivar state: the saved state of the hashes of the bytes before it
        (L{FileHashes.state}).
    """

    parts: int
    offset: int
    state: bytes


@frozen
class HashWork:
    """
    Bytes of the file to hash next, in order (L{PartPlanner.takeHashWork}).

    @ivar data: the bytes.
    @ivar parts: the parts planned once they are hashed: a part boundary
        whose state is kept as a L{Checkpoint}, or L{None} for the end of
        the file.
    @ivar offset: the file offset at their end.
    """

    data: bytes | bytearray | memoryview = field(repr=lambda data: f"<{len(data)} bytes>")
    parts: int | None
    offset: int


@define(eq=False)
class PartPlanner:
    """
    Cut a stream of writes into S3 parts.

    The whole file's hashes are computed as parts are cut, in file order;
    with resumable hashes, their state at the last L{CHECKPOINTS} part
    boundaries is kept (L{checkpoints}).

    @ivar schedule: the size of each part.
    @ivar capacity: the most bytes the planner may hold: a write ending
        further than this past the first byte not yet sent is refused.
    @ivar buffers: where large parts take their buffers from, and where
        L{recycle} gives them back; L{None} to allocate each part anew.
    @ivar algorithms: the hashes to compute (SHA-256 is always one).
    @ivar deferHashing: leave the hashing to whoever calls
        L{takeHashWork}, rather than hash each part as it is cut.
    @ivar received: the end of the furthest write so far (the file's size
        if it has no gaps).
    @ivar partsPlanned: parts handed out so far.
    """

    schedule: PartSchedule
    capacity: int
    buffers: BufferPool | None = None
    algorithms: tuple[str, ...] = ("sha256",)
    deferHashing: bool = False
    received: int = field(default=0, init=False)
    partsPlanned: int = field(default=0, init=False)
    _sent: int = field(default=0, init=False)
    _pending: list[_PendingPart] = field(factory=list, init=False, repr=False)
    hashes: FileHashes = field(init=False, repr=False)
    _checkpoints: deque[Checkpoint] = field(
        factory=lambda: deque(maxlen=CHECKPOINTS), init=False, repr=False
    )
    _hashedTo: int = field(default=0, init=False, repr=False)
    _work: list[HashWork] = field(factory=list, init=False, repr=False)

    @hashes.default
    def _newHashes(self) -> FileHashes:
        return FileHashes(self.algorithms)

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """
        The hash states at the last part boundaries, oldest first; none
        without resumable hashes.
        """
        return list(self._checkpoints)

    @property
    def held(self) -> int:
        """
        @return: bytes held in memory, gaps included.
        """
        return sum(part.filled for part in self._pending)

    @property
    def nextPartSize(self) -> int:
        """
        @return: the full size of the part being filled now.
        """
        return self.schedule.sizeOf(self.partsPlanned + 1)

    @property
    def sha256(self) -> str:
        """
        @return: the hex SHA-256 of the bytes hashed so far (the whole
            file, after L{finish} and its hash work).
        """
        return self.hashes.hexdigest("sha256")

    def takeHashWork(self) -> list[HashWork]:
        """
        @return: what is to be hashed next, in order, each to be passed to
            L{hash} in that order and its result to L{hashed}; never
            anything without C{deferHashing}.
        """
        work, self._work = self._work, []
        return work

    def hash(self, work: HashWork) -> bytes | None:
        """
        Hash C{work}.  Safe on another thread, as long as the calls are in
        order and nothing else hashes meanwhile.

        @return: the state to keep at its part boundary, if any.
        """
        self.hashes.update(work.data)
        if work.parts is None:
            return None
        return self.hashes.state()

    def hashed(self, work: HashWork, state: bytes | None) -> None:
        """
        Keep what L{hash} returned for C{work}.
        """
        if state is not None and work.parts is not None:
            self._checkpoints.append(Checkpoint(work.parts, work.offset, state))

    def feed(self, offset: int, data: bytes) -> list[Part]:
        """
        Accept one write.

        @param offset: where the client says C{data} goes.
        @param data: the bytes.
        @return: the parts, in order, that are now complete.
        @raise NotSupported: if C{data} would overwrite bytes already sent
            to S3, go past the last part S3 allows, or make the planner
            hold more than its capacity.
        """
        if not data:
            return []
        end = offset + len(data)
        if offset < self._sent:
            raise NotSupported(
                f"write at offset {offset}: the bytes before {self._sent} "
                "were already sent to S3 and cannot be rewritten"
            )
        if end - self._sent > self.capacity:
            raise NotSupported(
                f"write at offset {offset} lands more than {self.capacity} "
                f"bytes past the data received so far ({self._sent})"
            )
        view = memoryview(data)
        position = offset
        while position < end:
            part = self._partAt(position)
            stop = min(end, part.start + part.size)
            # Only the part to be sent next takes a part-sized buffer: the
            # others hold only what reached them, so that scattered writes
            # cannot make the planner hold more than its capacity.
            buffers = self.buffers if part is self._pending[0] else None
            part.put(position - part.start, view[position - offset : stop - offset], buffers)
            position = stop
        self.received = max(self.received, end)
        return self._ready()

    def restart(self, checkpoints: list[Checkpoint]) -> None:
        """
        Continue an upload from the last of C{checkpoints}, a part boundary
        whose parts are stored: the next write must land at its offset, and
        the hash goes on from the state saved there.  The earlier ones are
        kept as L{checkpoints} too.

        @raise ValueError: if the planner has planned anything already.
        """
        if self.partsPlanned or self._pending or self.received:
            raise ValueError("only a new planner can be restarted")
        checkpoint = checkpoints[-1]
        self.hashes = FileHashes.fromState(checkpoint.state)
        self._sent = self.received = checkpoint.offset
        self.partsPlanned = checkpoint.parts
        self._checkpoints.clear()
        self._checkpoints.extend(checkpoints)

    def appendFrom(self, parts: int, states: dict[str, bytes] | None, end: int) -> int:
        """
        Continue a stored file of C{end} bytes whose first C{parts} parts are
        copied into the upload: the bytes from the end of those parts to
        C{end} must be fed (the stored file's tail), then the client's from
        C{end}.  The hashes go on from C{states}, the stored file's whole
        states (those of L{algorithms} it has; the others are no longer
        computed), and skip the tail; with none (a file shorter than a
        part, read whole), they start anew and hash the tail.

        @return: the offset from which the tail must be fed.
        @raise ValueError: if the planner has planned anything already.
        """
        if self.partsPlanned or self._pending or self.received:
            raise ValueError("only a new planner can append")
        start = self.schedule.startOf(parts + 1)
        if states is not None:
            self.hashes = FileHashes.fromStates(
                {name: state for name, state in states.items() if name in self.algorithms}
            )
            self._hashedTo = end
        self._sent = self.received = start
        self.partsPlanned = parts
        return start

    def finish(self) -> SinglePut | FinalPart:
        """
        The client closed the file: plan what is left.

        @return: L{SinglePut} if no part was planned, else L{FinalPart}.
        @raise UploadFailed: if some bytes were never written.
        """
        for part in self._pending:
            expected = min(part.size, self.received - part.start)
            if part.contiguous() < expected:
                raise UploadFailed(
                    f"the file has a hole at offset {part.start + part.contiguous()}"
                )
        data: bytes | bytearray
        start = self._pending[0].start if self._pending else self.received
        if not self._pending:
            data = b""
        else:
            # Anything before the last pending part would have been cut.
            (last,) = self._pending
            data = last.content()
            if data is not last.data:
                self.recycle(last.data)
        self._pending = []
        self._hashFrom(start, data, None)
        if self.partsPlanned == 0:
            return SinglePut(data)
        if not data:
            # A resumed upload closed at a part boundary.
            return FinalPart(None)
        self.partsPlanned += 1
        return FinalPart(Part(self.partsPlanned, data))

    def discard(self) -> int:
        """
        Drop every byte held.

        @return: how many bytes were held.
        """
        held = self.held
        for part in self._pending:
            self.recycle(part.data)
        self._pending = []
        return held

    def recycle(self, data: bytes | bytearray) -> None:
        """
        Give back the buffer of a part S3 has stored (or that will not be
        sent), for a later part to reuse.
        """
        if self.buffers is not None:
            self.buffers.give(data)

    def _hashFrom(self, start: int, data: bytes | bytearray, parts: int | None) -> None:
        """
        Hash C{data}, which begins at offset C{start}, but for any bytes of
        it before L{_hashedTo} (a stored file's tail, already in the hash),
        now or later (L{deferHashing}).

        @param parts: the parts planned at its end, or L{None} for the end
            of the file.
        """
        skip = min(len(data), max(0, self._hashedTo - start))
        work = HashWork(memoryview(data)[skip:] if skip else data, parts, start + len(data))
        if self.deferHashing:
            self._work.append(work)
        else:
            self.hashed(work, self.hash(work))

    def _partAt(self, position: int) -> _PendingPart:
        for part in self._pending:
            if part.start <= position < part.start + part.size:
                return part
        while True:
            if self._pending:
                last = self._pending[-1]
                number, start = last.number + 1, last.start + last.size
            else:
                number, start = self.partsPlanned + 1, self._sent
            if number > self.schedule.limits.maxParts:
                raise NotSupported(
                    f"file too large: S3 takes at most "
                    f"{self.schedule.limits.maxParts} parts "
                    f"({self.schedule.largestFile} bytes at this part size)"
                )
            part = _PendingPart(number, start, self.schedule.sizeOf(number))
            self._pending.append(part)
            if position < start + part.size:
                return part

    def _ready(self) -> list[Part]:
        parts = []
        while self._pending:
            first = self._pending[0]
            if first.contiguous() < first.size or self.received <= first.start + first.size:
                break
            del self._pending[0]
            data = first.content()
            self._sent += first.size
            self.partsPlanned += 1
            self._hashFrom(first.start, data, self.partsPlanned)
            parts.append(Part(first.number, data))
        return parts
