"""
File-system semantics against a real S3: a 10,000-entry directory, uploads
under way seen and removed from another session, directory times,
downloads with bounded memory, C{reget} and C{df}.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.integration.faultproxy import Fault, FaultProxy

from .conftest import (
    PART,
    MiB,
    keys,
    memoryKiB,
    multipartUploads,
    paramikoSFTP,
    sftpCommand,
)
from .test_openssh import makeFile, waitFor


def test_largeDirectory(startGateway: Any, bucket: str, s3: Any) -> None:
    """
    A directory of 10,000 files (ten S3 pages) lists completely through
    OpenSSH C{ls -1} and C{ls -l}: no truncation at 1,000 keys, and no
    reply OpenSSH finds too long.
    """
    gateway = startGateway()
    gateway.addUser("alice")
    names = [f"file-{i:05d}-" + "x" * 100 for i in range(10_000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket=bucket, Key=f"alice/many/{name}"), names))
    result = gateway.sftp("alice", ["ls -1 many"])
    assert result.returncode == 0, result.stderr
    # OpenSSH prints each name with the directory it listed.
    listed = [
        line.strip().removeprefix("many/") for line in result.stdout.splitlines() if "file-" in line
    ]
    assert sorted(listed) == names
    result = gateway.sftp("alice", ["ls -l many"])
    assert result.returncode == 0, result.stderr
    assert sum(1 for line in result.stdout.splitlines() if line.startswith("-rw-r--r--")) == 10_000


def test_uploadUnderWay(startGateway: Any, bucket: str, s3: Any) -> None:
    """
    While one session uploads, another sees the file with the bytes sent
    so far in C{stat} and in listings; removing it from the second
    session aborts the upload: the writer's close fails, and neither an
    object nor a multipart upload is left.
    """
    gateway = startGateway()
    gateway.addUser("alice")
    with paramikoSFTP(gateway, "alice") as writer, paramikoSFTP(gateway, "alice") as other:
        other.mkdir("inbox")
        f = writer.open("inbox/growing.bin", "wb")
        f.write(b"a" * (PART + 1000))
        f.flush()
        waitFor(lambda: other.stat("inbox/growing.bin").st_size == PART + 1000)
        entries = {a.filename: a.st_size for a in other.listdir_attr("inbox")}
        assert entries == {"growing.bin": PART + 1000}
        waitFor(lambda: len(multipartUploads(s3, bucket)) == 1)
        other.remove("inbox/growing.bin")
        try:
            f.write(b"b" * 1000)
            f.close()
        except OSError:
            pass
        else:
            raise AssertionError("the removed upload's close succeeded")
        waitFor(lambda: multipartUploads(s3, bucket) == [])
        assert keys(s3, bucket, "alice/inbox/") == ["alice/inbox/"]
        try:
            other.stat("inbox/growing.bin")
        except FileNotFoundError:
            pass
        else:
            raise AssertionError("the removed upload is still visible")


def test_directoryTimes(startGateway: Any) -> None:
    """
    A directory made with C{mkdir} reports the time it was made, and
    C{ls -l} never shows 1970.
    """
    gateway = startGateway()
    gateway.addUser("alice")
    before = time.time()
    assert gateway.sftp("alice", ["mkdir made"]).returncode == 0
    with paramikoSFTP(gateway, "alice") as sftp:
        made = sftp.stat("made")
        assert abs(made.st_mtime - before) < 120, made
        assert abs(sftp.stat(".").st_mtime - time.time()) < 120
    result = gateway.sftp("alice", ["ls -l"])
    assert result.returncode == 0
    assert "1970" not in result.stdout, result.stdout


def test_downloadBoundedMemory(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    paramiko's C{getfo} asks for the whole file at once (prefetch) and
    OpenSSH C{get -R 1024} keeps 1024 reads in flight; with every S3 read
    delayed, the gateway's peak RSS grows by its read-ahead reservation
    and the replies under way, far less than the file, and both downloads
    are exact.
    """
    gateway = startGateway(proxy.endpointURL)
    gateway.addUser("alice")
    data = makeFile(tmp_path, "big", 96 * MiB).read_bytes()
    s3.put_object(Bucket=bucket, Key="alice/big", Body=data)
    with paramikoSFTP(gateway, "alice") as sftp:
        sftp.getfo("big", open(tmp_path / "warm", "wb"))
        baseline = memoryKiB(gateway.process.pid, "VmHWM")
        proxy.rules.append(
            lambda method, path: (
                Fault(delay=0.05) if method == "GET" and "alice/big" in path else None
            )
        )
        target = tmp_path / "paramiko"
        with target.open("wb") as out:
            sftp.getfo("big", out)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    local = tmp_path / "openssh"
    batch = tmp_path / "batch"
    batch.write_text(f"get big {local}\n")
    result = subprocess.run(
        [
            *sftpCommand(gateway.port, gateway.root / "alice_key"),
            "-R",
            "1024",
            "-b",
            str(batch),
            "alice@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert local.read_bytes() == data
    growth = memoryKiB(gateway.process.pid, "VmHWM") - baseline
    print(f"peak RSS grew by {growth} KiB")
    # Read-ahead (24 MiB) plus at most 4 MiB of replies under way, and
    # the copies of the replies being sent.
    assert growth < 40 * 1024, f"peak RSS grew by {growth} KiB"


def test_regetAndDf(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    C{reget} resumes a partial download from where the local copy ends;
    C{df} answers from C{statvfs@openssh.com}.
    """
    gateway = startGateway()
    gateway.addUser("alice")
    data = makeFile(tmp_path, "src", 3 * MiB + 5).read_bytes()
    s3.put_object(Bucket=bucket, Key="alice/file", Body=data)
    partial = tmp_path / "partial"
    partial.write_bytes(data[: MiB + 17])
    result = gateway.sftp("alice", [f"reget file {partial}", "df -h"])
    assert result.returncode == 0, result.stderr
    assert partial.read_bytes() == data
    assert "Size" in result.stdout and "1.0P" in result.stdout, result.stdout
