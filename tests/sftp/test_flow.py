"""
Tests for L{twisted_s3sftp.sftp.flow}: the memory limit and the channel window
bookkeeping.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.sftp.flow import SLACK, ChannelWindow, MemoryLimit, uploadReservation
from twisted_s3sftp.store.parts import MiB


class MemoryLimitTests(SynchronousTestCase):
    """
    L{MemoryLimit} hands out memory up to its limit, first come first
    served.
    """

    def test_tryReserve(self) -> None:
        """
        Reservations succeed while they fit and fail once they do not.
        """
        memory = MemoryLimit(100)
        self.assertTrue(memory.tryReserve(60))
        self.assertFalse(memory.tryReserve(50))
        self.assertTrue(memory.tryReserve(40))
        self.assertEqual(memory.available, 0)
        memory.free(60)
        self.assertEqual(memory.available, 60)

    def test_waitInLine(self) -> None:
        """
        A request that does not fit waits; later requests queue behind it
        even if they would fit (no starvation of large requests); freeing
        memory grants them in order.
        """
        memory = MemoryLimit(100)
        memory.tryReserve(90)
        granted: list[str] = []
        memory.reserveLater(50, lambda: granted.append("big"))
        self.assertFalse(memory.tryReserve(5))
        memory.reserveLater(5, lambda: granted.append("small"))
        self.assertEqual(granted, [])
        memory.free(90)
        self.assertEqual(granted, ["big", "small"])
        self.assertEqual(memory.used, 55)

    def test_withdraw(self) -> None:
        """
        A withdrawn request is never granted and no longer blocks the line.
        """
        memory = MemoryLimit(100)
        memory.tryReserve(90)
        granted: list[str] = []
        withdraw = memory.reserveLater(50, lambda: granted.append("big"))
        memory.reserveLater(10, lambda: granted.append("small"))
        withdraw()
        self.assertEqual(granted, ["small"])
        memory.free(90)
        self.assertEqual(granted, ["small"])
        self.assertEqual(memory.used, 10)


class ChannelWindowTests(SynchronousTestCase):
    """
    L{ChannelWindow} never lets the client make the channel hold more than
    its target.
    """

    def test_creditedOnlyWhenFreed(self) -> None:
        """
        Received bytes are not re-granted until credited; credits are
        granted back to the client.
        """
        grants: list[int] = []
        window = ChannelWindow(1000, onGrant=grants.append)
        self.assertTrue(window.receive(1000))
        self.assertEqual(window.window, 0)
        self.assertFalse(window.receive(1))
        window.credit(300)
        self.assertEqual(grants, [300])
        self.assertEqual((window.held, window.window), (700, 300))

    def test_capped(self) -> None:
        """
        However large the target, the client is never given more than
        C{maximum} at once; as it sends, the rest of the target is granted
        up to that cap, so the channel can still hold its whole target.
        """
        grants: list[int] = []
        window = ChannelWindow(100, onGrant=grants.append, maximum=400)
        window.resize(900)
        self.assertEqual((window.target, window.window), (1000, 400))
        self.assertTrue(window.receive(400))
        self.assertFalse(window.receive(1))
        window.credit(0)
        self.assertEqual((window.held, window.window), (400, 400))
        self.assertTrue(window.receive(400))
        window.credit(0)
        self.assertEqual((window.held, window.window), (800, 200))
        self.assertEqual(grants, [300, 400, 200])
        # Small credits are batched against the cap, not the target.
        batched = ChannelWindow(100, onGrant=grants.append, maximum=400)
        batched.resize(900)
        batched.receive(10)
        batched.credit(10)
        self.assertEqual((grants[-1], batched.window), (300, 390))

    def test_batching(self) -> None:
        """
        Small credits are batched while the client still holds more than
        half its window.
        """
        grants: list[int] = []
        window = ChannelWindow(1000, onGrant=grants.append)
        window.receive(100)
        window.credit(50)
        self.assertEqual(grants, [])
        window.credit(50)
        self.assertEqual(grants, [])
        window.receive(500)
        window.credit(500)
        self.assertEqual(grants, [600])

    def test_shrink(self) -> None:
        """
        After the target shrinks, credits are withheld until the client's
        window and the bytes held fit the new target again.
        """
        grants: list[int] = []
        window = ChannelWindow(1000, onGrant=grants.append)
        window.receive(800)
        window.resize(-600)
        window.credit(800)
        self.assertEqual(grants, [200])
        self.assertEqual(window.held + window.window, 400)

    def test_invariant(self) -> None:
        """
        Under random arrivals, credits and resizes, the client can never
        make the channel hold more than the largest target it was given,
        and held plus window is within the current target whenever a grant
        is made.
        """
        rng = random.Random(4)
        grants: list[int] = []
        window = ChannelWindow(1000, onGrant=grants.append)
        highest = 1000
        for _ in range(10_000):
            action = rng.random()
            if action < 0.5 and window.window:
                window.receive(rng.randint(1, window.window))
            elif action < 0.9 and window.held:
                before = len(grants)
                window.credit(rng.randint(1, window.held))
                if len(grants) > before:
                    self.assertLessEqual(window.held + window.window, window.target)
            else:
                change = rng.choice([-300, 300])
                if window.target + change >= 100:
                    window.resize(change)
                    highest = max(highest, window.target)
            self.assertLessEqual(window.held + window.window, highest)


class ReservationTests(SynchronousTestCase):
    """
    L{uploadReservation} sizes an upload's share of memory.
    """

    def test_reservation(self) -> None:
        """
        The minimum is one part plus slack; the wish is enough for every
        part in flight plus one filling, capped by the buffer limit but
        never below the minimum.
        """
        self.assertEqual(
            uploadReservation(8 * MiB, 4, 64 * MiB), (8 * MiB + SLACK, 40 * MiB + SLACK)
        )
        self.assertEqual(uploadReservation(8 * MiB, 16, 64 * MiB), (8 * MiB + SLACK, 64 * MiB))
        self.assertEqual(
            uploadReservation(128 * MiB, 4, 64 * MiB),
            (128 * MiB + SLACK, 128 * MiB + SLACK),
        )
