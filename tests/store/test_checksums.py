"""
Tests for L{twisted_s3sftp.store.checksums}: the CRC32 every part carries.
"""

from __future__ import annotations

import base64
import random
import zlib

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.store.checksums import crc32


class CRC32Tests(SynchronousTestCase):
    """
    L{crc32} is C{zlib}'s CRC32, as S3 writes it, for any buffer.
    """

    def test_zlibs(self) -> None:
        """
        Big-endian, base64; the same for bytes, bytearrays and (sliced)
        memoryviews as C{zlib.crc32}; the empty body's is C{AAAAAA==}.
        """
        data = random.Random(3).randbytes(100_000)
        expected = base64.b64encode(zlib.crc32(data[7:]).to_bytes(4, "big")).decode()
        for body in (data[7:], bytearray(data[7:]), memoryview(bytearray(data))[7:]):
            self.assertEqual(crc32(body), expected)
        self.assertEqual(crc32(b""), "AAAAAA==")
        self.assertEqual(crc32(b"123456789"), "y/Q5Jg==")
