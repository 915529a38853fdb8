"""
The directory cache against a real S3 (SeaweedFS) with OpenSSH's C{sftp}:
a batch of uploads into one directory lists it a few times, not once per
file; C{--dir-cache-ttl 0} lists per file as before; what another writer
puts in a listed directory shows within the TTL.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .conftest import (
    Gateway,
    keys,
    objectBytes,
    paramikoSFTP,
    rcloneCopy,
    rcloneEnvironment,
    writeReports,
)

FILES = 30


def s3Requests(gateway: Gateway, operation: str) -> float:
    """
    @return: the S3 requests of C{operation} the gateway made without
        error, from its C{/metrics}.
    """
    with urllib.request.urlopen(
        f"http://127.0.0.1:{gateway.metricsPort()}/metrics", timeout=10
    ) as r:
        text = r.read().decode()
    name = f's3sftp_s3_requests_total{{operation="{operation}",outcome="ok"}} '
    return sum(float(line[len(name) :]) for line in text.splitlines() if line.startswith(name))


def batch(gateway: Gateway, user: str, source: Path) -> None:
    """
    Upload C{source} as C{FILES} files into C{batch/} with OpenSSH's
    C{sftp -b}, which exits 0 only if every CLOSE succeeded.
    """
    gateway.addUser(user)
    puts = [f"put {source} batch/f{n:02d}" for n in range(FILES)]
    result = gateway.sftp(user, ["mkdir batch", *puts])
    assert result.returncode == 0, result.stderr


def test_batchListsOnce(startGateway: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    """
    Thirty files put into one directory, each after OpenSSH's C{stat} of
    its target, cost a handful of listings with the default TTL (one for
    the directory, a few more as its TTL runs out), against one or more per
    file with C{--dir-cache-ttl 0}; every file is stored intact either way.
    """
    source = tmp_path / "small.bin"
    source.write_bytes(b"report line\n" * 300)
    metrics = "--metrics=tcp:0:interface=127.0.0.1"
    cached = startGateway(None, metrics)
    batch(cached, "cora", source)
    plain = startGateway(None, metrics, "--dir-cache-ttl=0")
    batch(plain, "pete", source)
    for user in ("cora", "pete"):
        stored = keys(s3, bucket, f"{user}/batch/")
        assert len(stored) == FILES + 1  # and the directory's marker
        assert all(
            objectBytes(s3, bucket, key) == source.read_bytes()
            for key in stored
            if not key.endswith("/")
        )
    withCache, without = s3Requests(cached, "ListObjectsV2"), s3Requests(plain, "ListObjectsV2")
    assert withCache <= 8, withCache
    assert without >= FILES, without


def test_othersWithinTtl(startGateway: Any, s3: Any, bucket: str) -> None:
    """
    A file another writer puts straight into S3, in a directory the
    gateway has just listed, is seen by C{stat} within C{--dir-cache-ttl}
    seconds (here 2); a file the gateway itself stores, at once.
    """
    gateway = startGateway(None, "--dir-cache-ttl=2")
    gateway.addUser("otto")
    with paramikoSFTP(gateway, "otto") as sftp:
        sftp.mkdir("in")
        with sftp.open("in/own.txt", "wb") as f:
            f.write(b"own")
        assert sftp.stat("in/own.txt").st_size == 3
        s3.put_object(Bucket=bucket, Key="otto/in/foreign.txt", Body=b"foreign")
        started = time.monotonic()
        while True:
            try:
                size = sftp.stat("in/foreign.txt").st_size
                break
            except FileNotFoundError:
                assert time.monotonic() - started < 2.5
                time.sleep(0.1)
        assert size == 7


def test_largeDirectory(startGateway: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    """
    Thirty files put into a directory of more than a page (1,100 entries
    already there) cost a handful of listings, not one or more per file:
    after the directory's first page, the page listed at the first new
    name runs to the end of the listing and answers for the rest.
    """
    source = tmp_path / "small.bin"
    source.write_bytes(b"report line\n" * 300)
    gateway = startGateway(None, "--metrics=tcp:0:interface=127.0.0.1")
    gateway.addUser("lara")
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: s3.put_object(Bucket=bucket, Key=f"lara/big/old{n:04d}", Body=b"x"),
                range(1100),
            )
        )
    before = s3Requests(gateway, "ListObjectsV2")
    puts = [f"put {source} big/new{n:02d}" for n in range(FILES)]
    result = gateway.sftp("lara", puts)
    assert result.returncode == 0, result.stderr
    listings = s3Requests(gateway, "ListObjectsV2") - before
    assert listings <= 6, listings
    assert all(
        objectBytes(s3, bucket, f"lara/big/new{n:02d}") == source.read_bytes() for n in range(FILES)
    )


def test_directoryAmongSiblings(startGateway: Any, s3: Any, bucket: str) -> None:
    """
    A sub-directory beside files whose names extend its own with
    characters before C{/} (C{logs-00} ... beside C{logs/}) stays a
    directory to C{stat} after a removal in it, with the cache on.
    """
    gateway = startGateway(None)
    gateway.addUser("sibyl")
    for n in range(20):
        s3.put_object(Bucket=bucket, Key=f"sibyl/d/logs-{n:02d}", Body=b"x")
    for name in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=f"sibyl/d/logs/{name}", Body=b"x")
    with paramikoSFTP(gateway, "sibyl") as sftp:
        assert stat.S_ISDIR(sftp.stat("d/logs").st_mode or 0)
        sftp.remove("d/logs/a")
        assert stat.S_ISDIR(sftp.stat("d/logs").st_mode or 0)
        assert sftp.stat("d/logs-19").st_size == 1


def test_rcloneCopy(startGateway: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    """
    rclone's C{copy} of forty small files (for each: an upload, a SETSTAT of
    its time, which is a copy onto itself, a C{stat} of the directory and
    an C{md5sum} over SSH) costs a PutObject and a CopyObject per file and
    fewer other requests than files: the files this server wrote, and the
    directory it listed, answer the rest.  Every file is stored intact
    with its time; rclone exits 0 (it checks each CLOSE, size and hash).
    """
    source = tmp_path / "reports"
    writeReports(source, FILES + 10, 200)
    gateway = startGateway(None, "--metrics=tcp:0:interface=127.0.0.1")
    key = gateway.addUser("rita")
    env = rcloneEnvironment(tmp_path / "rclone.conf", gateway.port, "rita", key)
    operations = ("PutObject", "CopyObject", "HeadObject", "ListObjectsV2")
    before = {operation: s3Requests(gateway, operation) for operation in operations}
    rcloneCopy(env, source, "gw:up")
    made = {
        operation: s3Requests(gateway, operation) - before[operation] for operation in operations
    }
    files = FILES + 10
    assert made["CopyObject"] == files, made
    # The others come at the start, while rclone's first transfers race
    # the directory's first listing (13 to 24 seen for 40 to 200 files);
    # before the cache kept files whole, they were 6 per file.
    assert made["HeadObject"] + made["ListObjectsV2"] < files, made
    for n in range(files):
        assert (
            objectBytes(s3, bucket, f"rita/up/r{n:02d}.csv")
            == (source / f"r{n:02d}.csv").read_bytes()
        )
    listed = subprocess.run(
        ["rclone", "lsjson", "gw:up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    times = {entry["Name"]: entry["ModTime"][:19] for entry in json.loads(listed.stdout)}
    assert times["r07.csv"] == "2020-09-13T12:26:47"


def test_copiesOfOwnFiles(startGateway: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    """
    A file this server wrote, small (one PutObject) or in parts (a
    multipart upload and the copy that records its metadata), uploaded with
    OpenSSH's C{sftp} (which exits 0 only if each CLOSE succeeded), then
    has its time set (a copy onto itself) and is renamed (a copy
    conditional on the ETag the cache holds) and renamed back: every step
    succeeds against SeaweedFS, and each file ends with its bytes and its
    time.
    """
    gateway = startGateway(None)
    gateway.addUser("cody")
    small, large = os.urandom(3000), os.urandom(9 * 1024 * 1024 + 5)
    for name, data in (("small", small), ("large", large)):
        (tmp_path / name).write_bytes(data)
    puts = [f"put {tmp_path / name} c/{name}" for name in ("small", "large")]
    result = gateway.sftp("cody", ["mkdir c", *puts])
    assert result.returncode == 0, result.stderr
    with paramikoSFTP(gateway, "cody") as sftp:
        for name, data in (("small", small), ("large", large)):
            sftp.utime(f"c/{name}", (1600000000, 1600000000))
            sftp.rename(f"c/{name}", f"c/{name}.moved")
            sftp.utime(f"c/{name}.moved", (1600000100, 1600000100))
            sftp.rename(f"c/{name}.moved", f"c/{name}")
            assert sftp.stat(f"c/{name}").st_mtime == 1600000100
            assert sftp.stat(f"c/{name}").st_size == len(data)
    assert objectBytes(s3, bucket, "cody/c/small") == small
    assert objectBytes(s3, bucket, "cody/c/large") == large
    assert keys(s3, bucket, "cody/c/") == ["cody/c/", "cody/c/large", "cody/c/small"]
