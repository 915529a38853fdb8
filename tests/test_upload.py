"""
Tests for L{twisted_s3sftp.upload}: how a stream of writes becomes parts.
"""

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.errors import NotSupported
from twisted_s3sftp.upload import (
    MIN_PART_SIZE,
    FinalPart,
    PartPlanner,
    SinglePut,
)

PART = MIN_PART_SIZE


def plan(size: int, chunk: int = 32 * 1024) -> tuple[list[int], object]:
    """
    Feed C{size} bytes in C{chunk}-byte writes.

    @return: the sizes of the parts planned while writing, and the plan
        returned at the end.
    """
    planner = PartPlanner(PART)
    sizes = []
    offset = 0
    while offset < size:
        n = min(chunk, size - offset)
        for part in planner.feed(offset, b"x" * n):
            sizes.append(len(part.data))
        offset += n
    return sizes, planner.finish()


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
        for size, (parts, kind, last) in cases.items():
            with self.subTest(size=size):
                sizes, final = plan(size)
                self.assertEqual(sizes, parts)
                self.assertIsInstance(final, kind)
                if isinstance(final, SinglePut):
                    self.assertEqual(len(final.data), last)
                else:
                    self.assertEqual(len(final.part.data), last)
                    self.assertEqual(final.part.number, len(parts) + 1)

    def test_bigWrites(self) -> None:
        """
        One write larger than several parts yields them all at once, in
        order and numbered from 1.
        """
        planner = PartPlanner(PART)
        data = bytes(range(256)) * ((2 * PART + 10) // 256 + 1)
        parts = planner.feed(0, data)
        self.assertEqual([p.number for p in parts], [1, 2])
        final = planner.finish()
        assert isinstance(final, FinalPart)
        self.assertEqual(b"".join(p.data for p in parts) + final.part.data, data)

    def test_bufferBounded(self) -> None:
        """
        The planner never holds more than one part plus one write.
        """
        planner = PartPlanner(PART)
        offset = 0
        for _ in range(1000):
            planner.feed(offset, b"y" * 32768)
            offset += 32768
            self.assertLessEqual(planner.buffered, PART + 32768)

    def test_nonSequential(self) -> None:
        """
        A write that does not start where the last one ended is refused
        with a reason; a gap and a rewrite are both refused.
        """
        planner = PartPlanner(PART)
        planner.feed(0, b"abc")
        e = self.assertRaises(NotSupported, planner.feed, 10, b"x")
        self.assertIn("non-sequential", e.message)
        self.assertRaises(NotSupported, planner.feed, 0, b"x")

    def test_partSizeLimits(self) -> None:
        """
        A part size outside S3's limits is refused.
        """
        self.assertRaises(ValueError, PartPlanner, PART - 1)
