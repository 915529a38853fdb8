"""
Tests for L{twisted_s3sftp.ssh.outgoing}: the data a channel holds back,
cut into packets as the client's window allows.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.outgoing import OutgoingQueue


def queued(*chunks: bytes) -> OutgoingQueue:
    """
    @return: a queue holding C{chunks}.
    """
    queue = OutgoingQueue()
    for chunk in chunks:
        queue.append(chunk)
    return queue


class OutgoingQueueTests(SynchronousTestCase):
    """
    L{OutgoingQueue} hands out the bytes written, in order, never more
    than the window or a packet allows.
    """

    def test_partialWindows(self) -> None:
        """
        Each take stops at the window; what is left comes out next, in
        order, and the size counts down to 0.
        """
        queue = queued(b"abcdefgh", b"ijkl")
        self.assertEqual([bytes(p) for p in queue.take(3, 100)], [b"abc"])
        self.assertEqual(len(queue), 9)
        self.assertEqual([bytes(p) for p in queue.take(7, 100)], [b"defghij"])
        self.assertEqual([bytes(p) for p in queue.take(100, 100)], [b"kl"])
        self.assertEqual((len(queue), queue.take(100, 100)), (0, []))

    def test_maxPacketSplits(self) -> None:
        """
        A chunk larger than a packet is cut into packets of the maximum
        size, the last one shorter; a zero window takes nothing.
        """
        queue = queued(b"x" * 10)
        self.assertEqual(queue.take(0, 4), [])
        self.assertEqual([len(p) for p in queue.take(100, 4)], [4, 4, 2])
        self.assertFalse(queue)

    def test_smallChunksShare(self) -> None:
        """
        Small chunks (short replies) share a packet, up to its size.
        """
        queue = queued(b"ab", b"cd", b"ef", b"gh")
        self.assertEqual([bytes(p) for p in queue.take(100, 5)], [b"abcde", b"fgh"])

    def test_wholeChunkNotCopied(self) -> None:
        """
        A chunk that is one packet is handed out as it was written.
        """
        chunk = b"y" * 1000
        queue = queued(chunk)
        (packet,) = queue.take(1000, 32768)
        self.assertIs(packet, chunk)

    def test_emptyIgnored(self) -> None:
        """
        Writing nothing queues nothing.
        """
        queue = queued(b"", b"a", b"")
        self.assertEqual([bytes(p) for p in queue.take(10, 10)], [b"a"])
        self.assertEqual(len(queue), 0)

    def test_contents(self) -> None:
        """
        L{OutgoingQueue.contents} is what is still queued, joined.
        """
        queue = queued(b"abc", b"def")
        queue.take(2, 100)
        self.assertEqual(queue.contents(), b"cdef")
        queue.take(10, 100)
        self.assertEqual(queue.contents(), b"")

    def test_manyChunksLinear(self) -> None:
        """
        Draining a backlog of many large chunks in small windows hands
        every byte out once, in order (no chunk is joined with the rest).
        """
        chunks = [bytes([i]) * 65536 for i in range(64)]
        queue = queued(*chunks)
        out = []
        while queue:
            out.extend(bytes(p) for p in queue.take(100_000, 32768))
        self.assertEqual(b"".join(out), b"".join(chunks))
