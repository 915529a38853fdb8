"""
Sans-I/O planning of one upload: bytes in, S3 parts out.

L{PartPlanner} is fed the client's writes in the order they arrived and
answers with the parts that are ready to send.  It holds back a full part
until at least one more byte arrives, so that:

  - a file of at most one part size is a single PutObject at CLOSE
    (L{SinglePut}), including the empty file;
  - a larger file is a multipart upload whose parts are all exactly the
    part size except the last, which is never empty (L{FinalPart}).

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

from attrs import define, field, frozen, validators

from .errors import NotSupported

MiB = 1024 * 1024

#: S3's smallest non-final part.
MIN_PART_SIZE = 5 * MiB

#: S3's largest part.
MAX_PART_SIZE = 5 * 1024 * MiB

#: S3's largest part number.
MAX_PARTS = 10_000


@frozen
class Part:
    """
    One part of a multipart upload.

    @ivar number: the S3 part number, from 1.
    @ivar data: its bytes.
    """

    number: int
    data: bytes = field(repr=lambda data: f"<{len(data)} bytes>")


@frozen
class SinglePut:
    """
    The whole upload fits one PutObject.

    @ivar data: the file's bytes (possibly none).
    """

    data: bytes = field(repr=lambda data: f"<{len(data)} bytes>")


@frozen
class FinalPart:
    """
    The upload was multipart; this is its last part.

    @ivar part: the last part, never empty.
    """

    part: Part


def _validPartSize(instance: object, attribute: object, value: int) -> None:
    if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        raise ValueError(
            f"part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
        )


@define(eq=False)
class PartPlanner:
    """
    Cut a sequential stream of writes into S3 parts.

    @ivar partSize: the size of every part but the last.
    @ivar received: bytes accepted so far (the next expected offset).
    @ivar partsPlanned: parts handed out by L{feed} so far.
    """

    partSize: int = field(validator=[validators.instance_of(int), _validPartSize])
    received: int = field(default=0, init=False)
    partsPlanned: int = field(default=0, init=False)
    _buffer: bytearray = field(factory=bytearray, init=False, repr=False)

    @property
    def buffered(self) -> int:
        """
        @return: bytes held that are not yet part of a planned part.
        """
        return len(self._buffer)

    def feed(self, offset: int, data: bytes) -> list[Part]:
        """
        Accept one write.

        @param offset: where the client says C{data} goes.
        @param data: the bytes.
        @return: the parts, in order, that are now complete.
        @raise NotSupported: if C{offset} is not where the previous write
            ended: S3 objects cannot be written out of order.
        """
        if offset != self.received:
            raise NotSupported(
                f"non-sequential write at offset {offset}, expected "
                f"{self.received}: only sequential uploads are supported"
            )
        self._buffer += data
        self.received += len(data)
        parts = []
        while len(self._buffer) > self.partSize:
            if self.partsPlanned + 1 >= MAX_PARTS:
                raise NotSupported("file too large for S3 at this part size")
            self.partsPlanned += 1
            parts.append(Part(self.partsPlanned, bytes(self._buffer[: self.partSize])))
            del self._buffer[: self.partSize]
        return parts

    def finish(self) -> SinglePut | FinalPart:
        """
        The client closed the file: plan what is left.

        @return: L{SinglePut} if no part was planned, else L{FinalPart}.
        """
        data = bytes(self._buffer)
        self._buffer.clear()
        if self.partsPlanned == 0:
            return SinglePut(data)
        self.partsPlanned += 1
        return FinalPart(Part(self.partsPlanned, data))
