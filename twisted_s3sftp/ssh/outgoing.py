"""
What a channel holds back until the client's window opens.

Conch's C{SSHChannel.write} keeps held-back data in one C{bytes} buffer:
every further write appends to it with C{+=}, and every window adjustment
slices the whole remainder in two, so with a few MiB of READ replies held
back each reply and each adjustment copies megabytes (29 % of the server's
samples in a 1 GiB download, issue 19).  L{OutgoingQueue} keeps the chunks
as they were written and cuts packets from its head: each byte is copied
at most once on its way out (and not at all when a packet is a whole
chunk, or a slice of one, which is passed on as a C{memoryview}).

Pure: no reactor, no I/O.
"""

from __future__ import annotations

from collections import deque

from attrs import define, field


@define(eq=False)
class OutgoingQueue:
    """
    Chunks of data waiting for window, in the order they were written.

    @ivar size: the bytes queued.
    """

    size: int = field(default=0, init=False)
    _chunks: deque[bytes] = field(factory=deque, init=False, repr=False)
    # Bytes of the first chunk already taken.
    _offset: int = field(default=0, init=False, repr=False)

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes) -> None:
        """
        Queue C{data} after what is queued already (nothing is copied).
        """
        if data:
            self._chunks.append(data)
            self.size += len(data)

    def take(self, window: int, maxPacket: int) -> list[bytes | memoryview]:
        """
        Take the data of as many packets as C{window} allows.

        @param window: the most bytes to take in all.
        @param maxPacket: the most bytes in one packet (at least 1).
        @return: each packet's data, in order: all of them C{maxPacket}
            long but the last, which holds what is left of the window or
            of the queue.  Consecutive chunks smaller than a packet share
            one.
        """
        packets: list[bytes | memoryview] = []
        chunks = self._chunks
        while chunks and window > 0:
            room = min(window, maxPacket)
            pieces: list[bytes | memoryview] = []
            filled = 0
            while chunks and filled < room:
                chunk = chunks[0]
                start = self._offset
                count = min(len(chunk) - start, room - filled)
                if start == 0 and count == len(chunk):
                    pieces.append(chunk)
                else:
                    pieces.append(memoryview(chunk)[start : start + count])
                filled += count
                if start + count == len(chunk):
                    chunks.popleft()
                    self._offset = 0
                else:
                    self._offset = start + count
            packets.append(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            window -= filled
            self.size -= filled
        return packets

    def contents(self) -> bytes:
        """
        @return: everything queued, joined (a copy: for Conch's C{buf}
            attribute, read only when a channel closes).
        """
        if not self._chunks:
            return b""
        first = memoryview(self._chunks[0])[self._offset :]
        return b"".join([first, *list(self._chunks)[1:]])
