"""
The gateway end to end: OpenSSH C{sftp} uploads into a real S3.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.faultproxy import FaultProxy

from .conftest import (
    PART,
    Gateway,
    MiB,
    assertStored,
    keys,
    multipartUploads,
    objectBytes,
    slowSftp,
)

LADDER = [0, 1, PART - 1, PART, PART + 1, 3 * PART + 7]


def makeFile(directory: Path, name: str, size: int) -> Path:
    """
    Write C{size} random bytes to C{directory/name}.
    """
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


def waitFor(condition: Any, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """
    Poll C{condition} until it returns something true.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def test_uploadLadder(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    C{put}, C{mkdir}, C{cd}, C{ls} and C{put} into the new directory: every
    file of the size ladder and a 40 MiB file lands at
    C{<home>/<path>} byte-identical with its SHA-256 in its metadata, no
    multipart upload is left over,
    and the gateway writes (next to) nothing to local disk.
    """
    gateway.addUser("alice")
    sources = tmp_path / "src"
    sources.mkdir()
    files = {f"f{size}": makeFile(sources, f"f{size}", size) for size in LADDER}
    files["big"] = makeFile(sources, "big", 40 * MiB)
    nested = makeFile(sources, "nested", PART + 1)
    before = gateway.diskWrites()
    commands = [f"put {path}" for path in files.values()]
    commands += ["mkdir incoming", "cd incoming", f"put {nested}", "ls -l", "cd ..", "ls -l"]
    result = gateway.sftp("alice", commands)
    assert result.returncode == 0, result.stderr
    written = gateway.diskWrites() - before

    for name, path in files.items():
        assertStored(s3, bucket, f"alice/{name}", path)
    assert objectBytes(s3, bucket, "alice/incoming/nested") == nested.read_bytes()
    assert multipartUploads(s3, bucket) == []
    assert "nested" in result.stdout and "incoming" in result.stdout
    assert sorted(keys(s3, bucket, "alice/")) == sorted(
        [f"alice/{name}" for name in files] + ["alice/incoming/", "alice/incoming/nested"]
    )
    uploaded = sum(p.stat().st_size for p in files.values()) + nested.stat().st_size
    # Only the log may reach the disk: far less than the data uploaded.
    assert written < 2 * MiB < uploaded, (written, uploaded)


def test_killedClientLeavesNothing(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    With resume off (C{--resume-ttl=0}), a client killed in the middle of
    a multipart upload leaves no object and no multipart upload behind,
    and the gateway keeps serving.  (With resume on, the upload is parked:
    C{tests/integration/test_resume.py}.)
    """
    gateway = startGateway(None, "--resume-ttl=0")
    key = gateway.addUser("alice")
    source = makeFile(tmp_path, "big", 40 * MiB)
    batch = tmp_path / "batch"
    batch.write_text(f"put {source}\n")
    client = slowSftp(
        gateway,
        "alice",
        key,
        batch,
        16000,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        waitFor(lambda: multipartUploads(s3, bucket))
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    waitFor(lambda: multipartUploads(s3, bucket) == [])
    time.sleep(1)
    assert keys(s3, bucket, "alice/") == []
    assert multipartUploads(s3, bucket) == []

    small = makeFile(tmp_path, "after", 10)
    assert gateway.sftp("alice", [f"put {small}"]).returncode == 0
    assert objectBytes(s3, bucket, "alice/after") == small.read_bytes()


def test_usersConfined(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A second user can neither see nor overwrite the first user's files:
    every path they use, C{..} included, stays in their own home.
    """
    gateway.addUser("alice")
    gateway.addUser("bob")
    secret = makeFile(tmp_path, "secret", 100)
    assert gateway.sftp("alice", [f"put {secret}"]).returncode == 0
    evil = makeFile(tmp_path, "evil", 50)

    listing = gateway.sftp("bob", ["ls -la /", "ls -la ..", "ls -la /../alice"])
    assert "secret" not in listing.stdout
    assert listing.returncode != 0  # /../alice is bob's own (missing) alice/
    result = gateway.sftp("bob", [f"put {evil} ../alice/secret", f"put {evil} /../../alice/secret"])
    assert result.returncode == 0, result.stderr
    assert objectBytes(s3, bucket, "alice/secret") == secret.read_bytes()
    assert sorted(keys(s3, bucket, "bob/")) == ["bob/alice/secret"]


def test_keysHotReload(gateway: Gateway) -> None:
    """
    A key file dropped in while the server runs admits its user at the
    next login; removing it refuses the next login; a file whose name is
    not a valid username admits nobody.
    """
    gateway.addUser("carol")
    assert gateway.sftp("carol", ["ls"]).returncode == 0
    (gateway.keysDir / "carol.pub").unlink()
    refused = gateway.sftp("carol", ["ls"])
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr

    gateway.addUser("dave")
    (gateway.keysDir / "dave.pub").rename(gateway.keysDir / "Dave.pub")
    (gateway.root / "dave_key").rename(gateway.root / "Dave_key")
    assert gateway.sftp("Dave", ["ls"]).returncode != 0


def test_s3FailuresReachTheClient(
    startGateway: Any, localS3: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    When S3 refuses a part, the client's upload fails and the multipart
    upload is aborted; when S3 refuses the PutObject of a small file, the
    CLOSE fails; in both cases no object appears, and the same gateway
    keeps serving other uploads.
    """
    proxy = FaultProxy(localS3.s3Port)
    try:
        gateway = startGateway(proxy.endpointURL)
        gateway.addUser("alice")
        proxy.rules.append(
            lambda method, path: (
                (403, "AccessDenied")
                if method == "PUT" and "/alice/big?" in path and "partNumber=2" in path
                else None
            )
        )
        proxy.rules.append(
            lambda method, path: (
                (500, "InternalError") if method == "PUT" and "/alice/refused" in path else None
            )
        )
        big = makeFile(tmp_path, "big", 3 * PART + 7)
        failed = gateway.sftp("alice", [f"put {big}"])
        assert failed.returncode != 0
        refused = makeFile(tmp_path, "refused", 10)
        failedClose = gateway.sftp("alice", [f"put {refused}"])
        assert failedClose.returncode != 0
        good = makeFile(tmp_path, "good", PART + 1)
        assert gateway.sftp("alice", [f"put {good}"]).returncode == 0

        waitFor(lambda: multipartUploads(s3, bucket) == [])
        assert keys(s3, bucket, "alice/") == ["alice/good"]
        assert objectBytes(s3, bucket, "alice/good") == good.read_bytes()
        assert any(status == 403 for _, _, status in proxy.faults)
        assert any(status == 500 for _, _, status in proxy.faults)
    finally:
        proxy.stop()


def test_startupErrors(localS3: Any, tmp_path: Path) -> None:
    """
    A missing bucket, or a store that refuses the credentials, stops
    C{twistd s3sftp} before it serves, with one line saying what is wrong.
    """
    from twisted_s3sftp.tools.seaweedfs import credentialsEnvironment

    from .conftest import twistdBinary

    (tmp_path / "keys").mkdir()
    base = [
        twistdBinary(),
        "-n",
        "--pidfile=",
        "s3sftp",
        f"--endpoint-url={localS3.endpointURL}",
        "--keys-dir=keys",
    ]
    cases = [
        (["--bucket=no-such-bucket-here"], credentialsEnvironment(), "does not exist"),
        (
            ["--bucket=no-such-bucket-here"],
            dict(credentialsEnvironment(), AWS_SECRET_ACCESS_KEY="wrong"),
            "denied",
        ),
    ]
    for args, env, expected in cases:
        result = subprocess.run(
            base + args,
            env=dict(os.environ, **env),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert lines[0].startswith("twistd s3sftp: error: ")
