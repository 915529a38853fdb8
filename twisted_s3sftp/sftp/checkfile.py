"""
The C{check-file} extension (draft-ietf-secsh-filexfer-extensions-00 §3):
a file's hash, answered from the digests stored with the object, never by
reading it.

Request, after the extension's name::

    string  filename (check-file-name) or handle (check-file-handle)
    string  hash algorithms, comma-separated, the client's preference first
    uint64  start offset
    uint64  length (0: to the end)
    uint32  block size (0: one hash over the range)

Only whole-file requests are answered (offset 0, length 0 or the file's
size, block size 0): a range or per-block hashes would need the bytes.
The first algorithm of the client's list that the object has a digest of
is used, as ProFTPD does.

Two reply dialects exist.  ProFTPD writes C{string algorithm} then the raw
digest, and WinSCP reads exactly that; paramiko (which sends the bare name
C{check-file} with a handle) and later drafts put C{string "check-file"}
first.  A reply is written in the dialect of the request's name.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import struct

from attrs import frozen

from ..errors import InvalidPath, NotSupported
from ..store.hashes import ALGORITHMS

#: The request names, and whether their reply starts with C{"check-file"}.
NAMES = {b"check-file-name": False, b"check-file-handle": False, b"check-file": True}

#: The request names that carry a handle rather than a path.
HANDLE_NAMES = frozenset((b"check-file-handle", b"check-file"))


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, at)
    at += 4
    if at + length > len(data):
        raise struct.error("string past the end")
    return data[at : at + length], at + length


@frozen
class CheckFileRequest:
    """
    One C{check-file} request.

    @ivar target: the path or the handle.
    @ivar algorithms: the algorithms asked for, the client's preference
        first, lower case.
    @ivar offset: where the range starts.
    @ivar length: its length, 0 to the end.
    @ivar blockSize: 0 for one hash over the range.
    @ivar prefixed: whether the reply starts with C{string "check-file"}.
    """

    target: bytes
    algorithms: tuple[str, ...]
    offset: int
    length: int
    blockSize: int
    prefixed: bool = False

    @classmethod
    def parse(cls, name: bytes, data: bytes) -> CheckFileRequest:
        """
        @param name: the extension's name, one of L{NAMES}.
        @param data: what follows it.
        @raise InvalidPath: for a malformed request.
        """
        try:
            target, at = _string(data, 0)
            algorithms, at = _string(data, at)
            offset, length, blockSize = struct.unpack_from(">QQI", data, at)
            names = algorithms.decode("ascii")
        except (struct.error, UnicodeDecodeError):
            raise InvalidPath("malformed check-file request") from None
        wanted = tuple(a.strip().lower() for a in names.split(",") if a.strip())
        return cls(target, wanted, offset, length, blockSize, NAMES[name])

    def answer(self, size: int, digests: dict[str, bytes]) -> bytes:
        """
        @param size: the file's size.
        @param digests: algorithm -> digest of the whole file, as stored.
        @return: the extended reply's data.
        @raise NotSupported: for a range or blocks, or when none of the
            algorithms asked for is stored.
        """
        if self.offset or self.length not in (0, size) or self.blockSize:
            raise NotSupported(
                "only a whole file's hash is served (offset 0, length 0, block size 0): "
                "the server answers from the hash stored with the object"
            )
        for algorithm in self.algorithms:
            digest = digests.get(algorithm)
            if digest is not None:
                reply = _ns(algorithm.encode("ascii")) + digest
                return _ns(b"check-file") + reply if self.prefixed else reply
        raise NotSupported(
            f"no stored hash in {', '.join(self.algorithms) or 'the list asked for'}; "
            f"the server can keep {', '.join(ALGORITHMS)}"
        )


def _ns(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data
