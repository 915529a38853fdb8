"""
Tests for L{twisted_s3sftp.store.parts}: how a stream of writes becomes parts.
"""

from __future__ import annotations

import hashlib
import random

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.errors import NotSupported, UploadFailed
from twisted_s3sftp.store.parts import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    POOLED_FROM,
    BufferPool,
    FinalPart,
    MiB,
    Part,
    PartLimits,
    PartPlanner,
    PartSchedule,
    SinglePut,
)

PART = MIN_PART_SIZE
TiB = 1024 * 1024 * MiB

#: A scale model of S3: parts of 5 to 40 bytes, at most 22 of them, so the
#: size doubles every 2 parts.
TINY = PartLimits(minPartSize=5, maxPartSize=40, maxParts=22)


S3_LIMITS = PartLimits()


def makePlanner(initial: int = PART, limits: PartLimits = S3_LIMITS) -> PartPlanner:
    """
    @return: a planner whose capacity never gets in the way.
    """
    return PartPlanner(PartSchedule(initial, limits), capacity=1 << 62)


def plan(
    planner: PartPlanner, data: bytes, chunk: int = 32 * 1024
) -> tuple[list[Part], SinglePut | FinalPart]:
    """
    Feed C{data} in order, C{chunk} bytes at a time.

    @return: the parts planned while writing, and the plan at the end.
    """
    parts = []
    for offset in range(0, len(data), chunk):
        parts.extend(planner.feed(offset, data[offset : offset + chunk]))
    return parts, planner.finish()


def joined(parts: list[Part], final: SinglePut | FinalPart) -> bytes:
    """
    @return: the object the parts make.
    """
    last = final.data if isinstance(final, SinglePut) else final.part.data
    return b"".join(bytes(p.data) for p in parts) + bytes(last)


class PlannerTests(SynchronousTestCase):
    """
    L{PartPlanner} sends a file of at most one part as one PutObject and a
    larger one as full parts plus a non-empty last part.
    """

    def test_sizes(self) -> None:
        """
        Sizes 0, 1, part-1 and part are single puts; part+1 and 3*part+7
        are multipart with every non-final part exactly the part size.
        """
        cases = {
            0: ([], SinglePut, 0),
            1: ([], SinglePut, 1),
            PART - 1: ([], SinglePut, PART - 1),
            PART: ([], SinglePut, PART),
            PART + 1: ([PART], FinalPart, 1),
            3 * PART + 7: ([PART, PART, PART], FinalPart, 7),
        }
        for size, (sizes, kind, last) in cases.items():
            with self.subTest(size=size):
                data = random.Random(size).randbytes(size)
                parts, final = plan(makePlanner(), data)
                self.assertEqual([len(p.data) for p in parts], sizes)
                self.assertEqual([p.number for p in parts], list(range(1, len(sizes) + 1)))
                self.assertIsInstance(final, kind)
                if isinstance(final, FinalPart):
                    self.assertEqual(len(final.part.data), last)
                    self.assertEqual(final.part.number, len(sizes) + 1)
                else:
                    self.assertEqual(len(final.data), last)
                self.assertEqual(joined(parts, final), data)

    def test_sha256(self) -> None:
        """
        The planner's SHA-256 after L{PartPlanner.finish} is that of the
        whole file, for a single put and for a multipart upload.
        """
        for size in (0, 100, 2 * PART + 3):
            data = random.Random(size).randbytes(size)
            planner = makePlanner()
            plan(planner, data)
            self.assertEqual(planner.sha256, hashlib.sha256(data).hexdigest())

    def test_bigWrites(self) -> None:
        """
        One write larger than several parts yields them all at once, in
        order and numbered from 1.
        """
        planner = makePlanner()
        data = bytes(range(256)) * ((2 * PART + 10) // 256 + 1)
        parts = planner.feed(0, data)
        self.assertEqual([p.number for p in parts], [1, 2])
        self.assertEqual(joined(parts, planner.finish()), data)

    def test_heldBounded(self) -> None:
        """
        Written in order, the planner never holds more than one part plus
        one write.
        """
        planner = makePlanner()
        offset = 0
        for _ in range(1000):
            planner.feed(offset, b"y" * 32768)
            offset += 32768
            self.assertLessEqual(planner.held, PART + 32768)

    def test_outOfOrder(self) -> None:
        """
        Writes that arrive out of order within the part in memory (and the
        next one) are placed where they belong: the parts and the hash are
        those of the file written in order, whatever the arrival order.
        """
        data = random.Random(1).randbytes(3 * PART + 12345)
        chunk = 32768
        writes = [(o, data[o : o + chunk]) for o in range(0, len(data), chunk)]
        shuffler = random.Random(2)
        # Shuffle within windows of 64 writes, as a pipelining client's
        # replies may be reordered.
        arrival = []
        for i in range(0, len(writes), 64):
            window = writes[i : i + 64]
            shuffler.shuffle(window)
            arrival.extend(window)
        planner = makePlanner()
        parts = []
        for offset, chunkData in arrival:
            parts.extend(planner.feed(offset, chunkData))
        final = planner.finish()
        self.assertEqual([p.number for p in parts], [1, 2, 3])
        self.assertEqual(joined(parts, final), data)
        self.assertEqual(planner.sha256, hashlib.sha256(data).hexdigest())

    def test_overwriteInMemory(self) -> None:
        """
        A write over bytes still in memory replaces them.
        """
        planner = makePlanner()
        planner.feed(0, b"hello world")
        planner.feed(6, b"there")
        final = planner.finish()
        assert isinstance(final, SinglePut)
        self.assertEqual(bytes(final.data), b"hello there")

    def test_rewriteSentData(self) -> None:
        """
        A write into bytes already sent to S3 is refused with a reason.
        """
        planner = makePlanner()
        planner.feed(0, b"q" * (PART + 5))
        e = self.assertRaises(NotSupported, planner.feed, 7, b"x")
        self.assertIn("already sent to S3", e.message)

    def test_gapBeyondCapacity(self) -> None:
        """
        A write landing further past the data received than the planner's
        capacity is refused with a reason; one within it is accepted.
        """
        planner = PartPlanner(PartSchedule(PART), capacity=2 * PART)
        planner.feed(0, b"a")
        planner.feed(2 * PART - 1, b"b")
        e = self.assertRaises(NotSupported, planner.feed, 2 * PART, b"c")
        self.assertIn("lands more than", e.message)

    def test_holeAtClose(self) -> None:
        """
        A file with bytes never written fails at CLOSE, naming the offset.
        """
        planner = makePlanner()
        planner.feed(0, b"abc")
        planner.feed(10, b"xyz")
        e = self.assertRaises(UploadFailed, planner.finish)
        self.assertIn("hole at offset 3", e.message)

    def test_holeInLaterPart(self) -> None:
        """
        A gap that spans a whole part is found at CLOSE too.
        """
        planner = makePlanner()
        planner.feed(0, b"a" * PART)
        planner.feed(3 * PART, b"z")
        e = self.assertRaises(UploadFailed, planner.finish)
        self.assertIn(f"hole at offset {PART}", e.message)

    def test_discard(self) -> None:
        """
        L{PartPlanner.discard} drops what is held and says how much.
        """
        planner = makePlanner()
        planner.feed(0, b"abc")
        self.assertEqual(planner.discard(), 3)
        self.assertEqual(planner.held, 0)


class BufferPoolTests(SynchronousTestCase):
    """
    L{BufferPool} hands out part-sized buffers and keeps those given back,
    up to its bound.
    """

    def test_reuse(self) -> None:
        """
        A buffer given back is the one taken next for that size; another
        size gets a new buffer.
        """
        pool = BufferPool(limit=100)
        first = pool.take(40)
        self.assertEqual(len(first), 40)
        pool.give(first)
        self.assertEqual(pool.idle, 40)
        self.assertIs(pool.take(40), first)
        self.assertEqual(pool.idle, 0)
        self.assertIsNot(pool.take(30), first)

    def test_bounded(self) -> None:
        """
        Idle buffers beyond the limit are not kept, nor are buffers of a
        size the pool never handed out, nor immutable bytes.
        """
        pool = BufferPool(limit=100)
        taken = [pool.take(40) for _ in range(3)]
        for buffer in taken:
            pool.give(buffer)
        self.assertEqual(pool.idle, 80)
        pool.give(bytearray(7))
        pool.give(bytes(40))
        self.assertEqual(pool.idle, 80)


class PooledPlannerTests(SynchronousTestCase):
    """
    A L{PartPlanner} with a L{BufferPool} fills large parts in pooled
    buffers and gives them back, without changing what it sends.
    """

    def makePlanner(self, pool: BufferPool) -> PartPlanner:
        """
        @return: a planner of S3-sized parts taking buffers from C{pool}.
        """
        return PartPlanner(PartSchedule(PART), capacity=1 << 62, buffers=pool)

    def test_staleBytesNeverSent(self) -> None:
        """
        Parts filled in reused buffers full of another upload's bytes, in
        order and out of order, carry exactly the file's bytes; the last
        part is only the bytes written.
        """
        pool = BufferPool(limit=4 * PART)
        for _ in range(2):
            pool.give(pool.take(PART))
        for buffer in pool._free[PART]:
            buffer[:] = b"S" * PART
        data = random.Random(3).randbytes(2 * PART + POOLED_FROM + 999)
        chunk = 65536
        writes = [(o, data[o : o + chunk]) for o in range(0, len(data), chunk)]
        early = writes[:40]
        random.Random(4).shuffle(early)
        writes[:40] = early
        planner = self.makePlanner(pool)
        parts = []
        for offset, piece in writes:
            parts.extend(planner.feed(offset, piece))
        final = planner.finish()
        self.assertEqual(joined(parts, final), data)
        self.assertEqual(planner.sha256, hashlib.sha256(data).hexdigest())

    def test_recycled(self) -> None:
        """
        The buffer of a part given back with L{PartPlanner.recycle} fills
        a later part, of this upload or the next.
        """
        pool = BufferPool(limit=4 * PART)
        planner = self.makePlanner(pool)
        (first,) = planner.feed(0, b"a" * (PART + 1))
        self.assertIsInstance(first.data, bytearray)
        planner.recycle(first.data)
        (second,) = planner.feed(PART + 1, b"b" * PART)
        self.assertIs(second.data, first.data)
        self.assertEqual(bytes(second.data), b"a" + b"b" * (PART - 1))

    def test_smallFilesUnpooled(self) -> None:
        """
        A file no larger than L{POOLED_FROM} never takes a part-sized
        buffer, and what the planner holds is what was written.
        """
        pool = BufferPool(limit=4 * PART)
        planner = self.makePlanner(pool)
        planner.feed(0, b"x" * POOLED_FROM)
        self.assertEqual(planner.held, POOLED_FROM)
        self.assertNotIn(PART, pool._free)
        final = planner.finish()
        assert isinstance(final, SinglePut)
        self.assertEqual(len(final.data), POOLED_FROM)

    def test_onlyNextPartPooled(self) -> None:
        """
        Scattered writes take a part-sized buffer only for the part to be
        sent next: a write far into a later part holds only what reached
        it, so the planner's memory stays within its capacity.
        """
        pool = BufferPool(limit=4 * PART)
        planner = self.makePlanner(pool)
        planner.feed(POOLED_FROM, b"a")
        planner.feed(PART + POOLED_FROM, b"b")
        later = planner._pending[1]
        self.assertEqual((len(planner._pending[0].data), len(later.data)), (PART, POOLED_FROM + 1))

    def test_heldCountsWritten(self) -> None:
        """
        Once a part is in a pooled buffer, L{PartPlanner.held} still counts
        the bytes written, not the buffer's size; L{PartPlanner.discard}
        gives the buffer back.
        """
        pool = BufferPool(limit=4 * PART)
        planner = self.makePlanner(pool)
        planner.feed(0, b"x" * (POOLED_FROM + 10))
        self.assertEqual(planner.held, POOLED_FROM + 10)
        self.assertEqual(planner.discard(), POOLED_FROM + 10)
        self.assertEqual(pool.idle, PART)


class ScheduleTests(SynchronousTestCase):
    """
    L{PartSchedule} grows parts so 10,000 of them carry the largest object.
    """

    def test_growthScaleModel(self) -> None:
        """
        With tiny limits the planner grows its parts (doubling every
        C{maxParts // 11} parts, capped at the largest part), every part
        but the last is at least the minimum, the file is intact, and a
        file one byte larger than the schedule allows is refused.
        """
        schedule = PartSchedule(5, TINY)
        largest = schedule.largestFile
        data = random.Random(3).randbytes(largest)
        planner = PartPlanner(schedule, capacity=1 << 62)
        parts, final = plan(planner, data, chunk=3)
        sizes = [len(p.data) for p in parts]
        self.assertEqual(
            sizes,
            [5, 5, 10, 10, 20, 20, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40],
        )
        assert isinstance(final, FinalPart)
        self.assertEqual(final.part.number, TINY.maxParts)
        self.assertTrue(all(TINY.minPartSize <= s <= TINY.maxPartSize for s in sizes))
        self.assertEqual(joined(parts, final), data)

        planner = PartPlanner(schedule, capacity=1 << 62)
        planner.feed(0, data)
        e = self.assertRaises(NotSupported, planner.feed, largest, b"!")
        self.assertIn("file too large", e.message)

    def test_realLimits(self) -> None:
        """
        With S3's limits, from any starting size every part is between
        5 MiB and 5 GiB, sizes never shrink, and 10,000 parts carry at
        least 5 TiB; from the default 8 MiB, 1 GiB and 4 GiB files keep
        the first size (so they need the same memory).
        """
        for initial in (MIN_PART_SIZE, 8 * MiB, 64 * MiB, MAX_PART_SIZE):
            with self.subTest(initial=initial):
                schedule = PartSchedule(initial)
                sizes = [schedule.sizeOf(n) for n in range(1, 10_001)]
                self.assertEqual(sizes, sorted(sizes))
                self.assertGreaterEqual(sizes[0], MIN_PART_SIZE)
                self.assertLessEqual(sizes[-1], MAX_PART_SIZE)
                self.assertGreaterEqual(schedule.largestFile, 5 * TiB)
                self.assertEqual(schedule.largestFile, sum(sizes))
        default = PartSchedule(8 * MiB)
        self.assertGreater(default.startOf(default.partsPerSize + 1), 4 * 1024 * MiB)

    def test_startOf(self) -> None:
        """
        L{PartSchedule.startOf} is the sum of the sizes of the parts before.
        """
        schedule = PartSchedule(5, TINY)
        offset = 0
        for number in range(1, TINY.maxParts + 2):
            self.assertEqual(schedule.startOf(number), offset)
            offset += schedule.sizeOf(number)

    def test_partSizeLimits(self) -> None:
        """
        A starting size outside the limits is refused.
        """
        self.assertRaises(ValueError, PartSchedule, PART - 1)
        self.assertRaises(ValueError, PartSchedule, MAX_PART_SIZE + 1)


class CheckpointTests(SynchronousTestCase):
    """
    The planner keeps the SHA-256 state at its last part boundaries.
    """

    def test_checkpoints(self) -> None:
        """
        After each part cut, the state of the bytes before the boundary is
        kept, the last L{CHECKPOINTS} of them; restoring one and hashing
        the rest gives the file's SHA-256, the planner's own.
        """
        from twisted_s3sftp.store.hashes import ResumableSHA256, problem
        from twisted_s3sftp.store.parts import CHECKPOINTS

        if problem() is not None:  # pragma: no cover (a build without the API)
            self.skipTest(problem() or "")
        data = random.Random(3).randbytes(30 * 5 + 3)
        planner = PartPlanner(PartSchedule(5, PartLimits(5, 5, 100)), capacity=1 << 20)
        parts, _ = plan(planner, data, chunk=7)
        self.assertEqual(len(parts), 30)
        checkpoints = planner.checkpoints
        self.assertEqual(len(checkpoints), CHECKPOINTS)
        self.assertEqual([c.parts for c in checkpoints], list(range(15, 31)))
        for checkpoint in checkpoints:
            self.assertEqual(checkpoint.offset, checkpoint.parts * 5)
            resumed = ResumableSHA256.fromState(checkpoint.state)
            resumed.update(data[checkpoint.offset :])
            self.assertEqual(resumed.hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(planner.sha256, hashlib.sha256(data).hexdigest())

    def test_deferredHashing(self) -> None:
        """
        A planner made with C{deferHashing} hashes nothing itself: it
        leaves the parts' bytes, in file order, as L{HashWork} with their
        boundaries, the end of the file last; hashed in that order, they
        give every configured hash of the file and the same checkpoints as
        hashing at once.
        """
        from twisted_s3sftp.store.hashes import FileHashes

        data = random.Random(4).randbytes(3 * 5 + 2)
        planners = [
            PartPlanner(
                PartSchedule(5, PartLimits(5, 5, 100)),
                capacity=1 << 20,
                algorithms=("sha256", "md5"),
                deferHashing=deferred,
            )
            for deferred in (False, True)
        ]
        now, later = planners
        for planner in planners:
            plan(planner, data, chunk=3)
        self.assertEqual(now.takeHashWork(), [])
        work = later.takeHashWork()
        self.assertEqual(
            [(w.parts, w.offset) for w in work], [(1, 5), (2, 10), (3, 15), (None, 17)]
        )
        self.assertEqual(later.hashes.digests(), FileHashes(("sha256", "md5")).digests())
        for item in work:
            later.hashed(item, later.hash(item))
        self.assertEqual(later.checkpoints, now.checkpoints)
        self.assertEqual(later.hashes.digests()["md5"], hashlib.md5(data).digest())
        self.assertEqual(later.sha256, hashlib.sha256(data).hexdigest())
