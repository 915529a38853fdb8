"""
The checksum each part and each object body carries to S3
(C{x-amz-checksum-crc32}): S3 refuses a body that does not match it, so
nothing corrupted on the way is stored.

It is computed with Intel ISA-L's CRC32 (the C{isal} package) where it is
installed: the same CRC32 as C{zlib}'s, five times faster here (0.04
against 0.23 CPU-s per GiB, measured on the bench machine), which counts
with every byte of every upload.  Without it, C{zlib}'s is used.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable

#: The CRC32 function used.
_crc32: Callable[[bytes | bytearray | memoryview], int]
try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover (a platform without isal's wheels)
    _crc32 = zlib.crc32


def crc32(data: bytes | bytearray | memoryview) -> str:
    """
    @param data: a part or object body.
    @return: its CRC32 as S3 wants it in C{x-amz-checksum-crc32}: the
        big-endian 4 bytes, base64-encoded.
    """
    return base64.b64encode(_crc32(data).to_bytes(4, "big")).decode("ascii")
