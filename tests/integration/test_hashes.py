"""
File hashes asked for by real clients over a real S3, answered from the
SHA-256 stored with each object: paramiko's C{SFTPFile.check} (its bare
C{check-file} with a handle) and WinSCP's C{check-file-name} request, sent
at packet level as WinSCP sends it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import PART, Gateway, paramikoSFTP


def test_checkFile(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    paramiko C{check("sha256")} on a file uploaded in parts gives the
    source's SHA-256; WinSCP's C{check-file-name} with C{sha256,sha1}, offset
    0, length 0, block 0, gets the algorithm and the 32-byte digest; a range
    and an algorithm not stored are refused as unsupported.
    """
    gateway.addUser("alice")
    data = os.urandom(2 * PART + 7)
    digest = hashlib.sha256(data).digest()
    with paramikoSFTP(gateway, "alice") as sftp:
        with sftp.open("f.bin", "wb") as f:
            f.write(data)
        assert sftp.stat("f.bin").st_size == len(data)
        with sftp.open("f.bin", "rb") as f:
            assert f.check("sha256") == digest
            with pytest.raises(OSError, match="whole file"):
                f.check("sha256", 1, 10)
            with pytest.raises(OSError, match="no stored hash"):
                f.check("md5")
        from paramiko.sftp import CMD_EXTENDED, int64

        _, reply = sftp._request(
            CMD_EXTENDED, "check-file-name", "f.bin", "sha256,sha1", int64(0), int64(0), 0
        )
        assert reply.get_text() == "sha256"
        assert reply.get_remainder() == digest
