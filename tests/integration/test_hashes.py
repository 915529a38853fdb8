"""
File hashes asked for by real clients over a real S3, answered from the
digests stored with each object (SHA-256 and MD5 by default, SHA-1 with
C{--hashes}): rclone 1.60's verification after each upload and its
C{md5sum}, C{sha1sum} and C{check} (hash commands over C{exec}), OpenSSH's
C{ssh HOST md5sum PATH}, paramiko's C{SFTPFile.check} (its bare
C{check-file} with a handle) and WinSCP's C{check-file-name} request, sent
at packet level as WinSCP sends it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import PART, SSH_OPTIONS, Gateway, paramikoSFTP


def test_checkFile(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    paramiko C{check("sha256")} and C{check("md5")} on a file uploaded in
    parts give the source's digests; WinSCP's C{check-file-name} with
    C{sha256,sha1}, offset 0, length 0, block 0, gets the algorithm and the
    32-byte digest; a range and an algorithm not stored are refused as
    unsupported.  The object holds the MD5 as rclone's S3 backend reads it.
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
            assert f.check("md5") == hashlib.md5(data).digest()
            with pytest.raises(OSError, match="whole file"):
                f.check("sha256", 1, 10)
            with pytest.raises(OSError, match="no stored hash"):
                f.check("sha1")
        from paramiko.sftp import CMD_EXTENDED, int64

        _, reply = sftp._request(
            CMD_EXTENDED, "check-file-name", "f.bin", "sha256,sha1", int64(0), int64(0), 0
        )
        assert reply.get_text() == "sha256"
        assert reply.get_remainder() == digest
    metadata = s3.head_object(Bucket=bucket, Key="alice/f.bin")["Metadata"]
    assert base64.b64decode(metadata["md5chksum"]) == hashlib.md5(data).digest()
    assert metadata["sha256"] == digest.hex()


def ssh(gateway: Gateway, user: str, command: str, stdin: bytes = b"") -> Any:
    """
    Run C{command} over OpenSSH C{ssh}'s C{exec} as C{user}.
    """
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(gateway.port),
            "-i",
            str(gateway.root / f"{user}_key"),
            *SSH_OPTIONS,
            f"{user}@127.0.0.1",
            command,
        ],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_sshHashCommands(gateway: Gateway, bucket: str, s3: Any) -> None:
    """
    OpenSSH C{ssh HOST md5sum PATH} (and C{sha256sum}, C{rclone hashsum
    sha256}) print GNU's line from the stored digest, exit 0; standard
    input is hashed; a missing file exits 1 with a message; an object
    stored by another tool prints nothing and exits 0; any other command,
    and a hash the server does not keep, are refused.
    """
    gateway.addUser("alice")
    data = b"hello world\n" * 1000
    with paramikoSFTP(gateway, "alice") as sftp:
        with sftp.open("dir/a b.txt", "wb") as f:
            f.write(data)
        sftp.stat("dir/a b.txt")
    md5, sha256 = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    result = ssh(gateway, "alice", "md5sum /dir/a\\ b.txt")
    assert (result.returncode, result.stdout) == (0, f"{md5}  /dir/a b.txt\n".encode())
    result = ssh(gateway, "alice", "sha256sum 'dir/a b.txt'")
    assert (result.returncode, result.stdout) == (0, f"{sha256}  dir/a b.txt\n".encode())
    result = ssh(gateway, "alice", "rclone hashsum sha256 '/dir/a b.txt'")
    assert result.stdout.split()[0] == sha256.encode()
    result = ssh(gateway, "alice", "md5sum", stdin=b"abc")
    assert (result.returncode, result.stdout) == (0, b"900150983cd24fb0d6963f7d28e17f72  -\n")
    result = ssh(gateway, "alice", "md5sum /nope")
    assert result.returncode == 1 and b"no such file" in result.stderr
    result = ssh(gateway, "alice", "md5sum /dir")
    assert result.returncode == 1 and b"directory" in result.stderr
    s3.put_object(Bucket=bucket, Key="alice/foreign", Body=b"x")
    result = ssh(gateway, "alice", "md5sum /foreign")
    assert (result.returncode, result.stdout) == (0, b"")
    for refused in ("sha1sum /dir/a\\ b.txt", "ls /", "md5sum /a /b", "sh -c 'md5sum /x'"):
        result = ssh(gateway, "alice", refused)
        assert result.returncode != 0 and not result.stdout, refused
    assert re.search(r"hash answered: alice md5 /dir/a b\.txt", gateway.log.read_text())


def rcloneEnvironment(gateway: Gateway, user: str, config: Path) -> dict[str, str]:
    """
    @return: an environment giving rclone a remote C{gw:} for C{user},
        configured in C{config} (where rclone saves what it detects).
    """
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | {
        "RCLONE_CONFIG": str(config),
        "RCLONE_CONFIG_GW_TYPE": "sftp",
        "RCLONE_CONFIG_GW_HOST": "127.0.0.1",
        "RCLONE_CONFIG_GW_PORT": str(gateway.port),
        "RCLONE_CONFIG_GW_USER": user,
        "RCLONE_CONFIG_GW_KEY_FILE": str(gateway.root / f"{user}_key"),
    }


def rclone(env: dict[str, str], *args: str, status: int = 0) -> Any:
    """
    Run rclone; it must exit with C{status}.
    """
    result = subprocess.run(
        ["rclone", "--retries", "1", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == status, result.stderr
    return result


def sums(output: str) -> dict[str, str]:
    """
    @return: name -> hash, from C{md5sum}-style lines.
    """
    return {name: digest for digest, name in (line.split("  ", 1) for line in output.splitlines())}


def test_rcloneVerifies(startGateway: Any, tmp_path: Path) -> None:
    """
    rclone 1.60 finds the hash commands (its probe of C{md5sum} and
    C{sha1sum} with no argument), verifies the MD5 of every file it
    uploads (C{md5 = ... OK} in its debug log, for an empty file, a small
    one and one in parts), lists them with C{md5sum} and C{sha1sum}, and
    C{rclone check} passes, then reports the file changed locally without
    a change of size.
    """
    gateway = startGateway(None, "--hashes=sha256,md5,sha1")
    gateway.addUser("rc")
    source = tmp_path / "src"
    source.mkdir()
    files = {"empty": b"", "small": os.urandom(1000), "big": os.urandom(PART + 12345)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    env = rcloneEnvironment(gateway, "rc", tmp_path / "rclone.conf")
    (tmp_path / "rclone.conf").write_text("")
    result = rclone(env, "copy", "-vv", str(source), "gw:up")
    for name, data in files.items():
        assert f"{name}: md5 = {hashlib.md5(data).hexdigest()} OK" in result.stderr, result.stderr
    listed = sums(rclone(env, "md5sum", "gw:up").stdout)
    assert listed == {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    listed = sums(rclone(env, "sha1sum", "gw:up").stdout)
    assert listed == {name: hashlib.sha1(data).hexdigest() for name, data in files.items()}
    rclone(env, "check", str(source), "gw:up")
    changed = bytearray(files["small"])
    changed[0] ^= 1
    (source / "small").write_bytes(changed)
    result = rclone(env, "check", str(source), "gw:up", status=1)
    assert "1 differences found" in result.stderr, result.stderr
    assert "small: md5 differ" in result.stderr, result.stderr


def test_rcloneStaleConfig(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A remote whose rclone.conf still holds C{md5sum_command = none} (saved
    when it first met a server without hash commands) gets no hashes
    ("hash unsupported") until those lines go, as the README says; an
    object stored by
    another tool has no hash, and C{rclone check} does not fail for it.
    """
    gateway.addUser("rc")
    config = tmp_path / "rclone.conf"
    config.write_text("[gw]\nmd5sum_command = none\nsha1sum_command = none\n")
    env = rcloneEnvironment(gateway, "rc", config)
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"data")
    result = rclone(env, "copy", "-vv", str(source), "gw:up")
    assert "md5 = " not in result.stderr
    result = rclone(env, "md5sum", "gw:up", status=1)
    assert "hash unsupported" in result.stderr
    config.write_text("")
    assert sums(rclone(env, "md5sum", "gw:up").stdout) == {"f": hashlib.md5(b"data").hexdigest()}
    s3.put_object(Bucket=bucket, Key="rc/up/g", Body=b"other")
    (source / "g").write_bytes(b"other")
    result = rclone(env, "check", str(source), "gw:up")
    assert "0 differences found" in result.stderr, result.stderr
