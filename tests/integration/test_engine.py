"""
The upload engine against a real S3 with faults injected by
L{tests.integration.faultproxy}: bounded memory under a slow S3, retries of transient
errors, prompt and final failures, checksums.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.integration.faultproxy import Fault, FaultProxy, isPart, once

from .conftest import (
    PART,
    MiB,
    assertStored,
    keys,
    memoryKiB,
    multipartUploads,
    sftpCommand,
)
from .test_openssh import makeFile, waitFor


def assertNothingLeft(s3: Any, bucket: str, prefix: str) -> None:
    """
    Assert no object under C{prefix} and no multipart upload in C{bucket}.
    """
    waitFor(lambda: multipartUploads(s3, bucket) == [])
    assert keys(s3, bucket, prefix) == []


def test_slowS3BoundedMemory(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    With every part delayed by S3 and a client that pipelines 1024 writes
    of 128 KiB (128 MiB outstanding), the gateway's peak RSS grows by
    little more than its memory limit (here 7 MiB; 4 MiB measured): it
    withholds SSH window instead of buffering.  The file still arrives
    intact.
    """
    gateway = startGateway(
        proxy.endpointURL,
        "--upload-concurrency=1",
        "--buffer-limit=7MiB",
        "--memory-limit=7MiB",
    )
    key = gateway.addUser("alice")
    warmUp = makeFile(tmp_path, "warm", PART + 1)
    assert gateway.sftp("alice", [f"put {warmUp}"]).returncode == 0
    baseline = memoryKiB(gateway.process.pid, "VmHWM")

    proxy.rules.append(lambda method, path: Fault(delay=0.4) if isPart(method, path) else None)
    source = makeFile(tmp_path, "big", 48 * MiB)
    batch = tmp_path / "batch"
    batch.write_text(f"put {source}\n")
    result = subprocess.run(
        [
            *sftpCommand(gateway.port, key),
            "-R",
            "1024",
            "-B",
            "131072",
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
    growth = memoryKiB(gateway.process.pid, "VmHWM") - baseline
    assertStored(s3, bucket, "alice/big", source)
    assert len(proxy.faults) >= 9
    # 7 MiB of uploads plus 1 MiB of base window; without the window
    # withheld it grew by 38 MiB here (the client sent most of the file).
    assert growth < 16 * 1024, f"peak RSS grew by {growth} KiB"


def test_transientFaultsRetried(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    One 503 SlowDown on a part and one connection reset on another are
    retried by the gateway: the upload succeeds and the object is intact,
    with its SHA-256 recorded.
    """
    gateway = startGateway(proxy.endpointURL)
    gateway.addUser("alice")
    proxy.rules.append(
        once(
            lambda method, path: (
                Fault(status=503, code="SlowDown") if isPart(method, path, 2) else None
            )
        )
    )
    proxy.rules.append(
        once(lambda method, path: Fault(reset=True) if isPart(method, path, 3) else None)
    )
    source = makeFile(tmp_path, "big", 3 * PART + 7)
    result = gateway.sftp("alice", [f"put {source}"])
    assert result.returncode == 0, result.stderr
    assertStored(s3, bucket, "alice/big", source)
    assert sorted(str(label) for _, _, label in proxy.faults) == ["503", "reset"]
    assert multipartUploads(s3, bucket) == []


def test_persistentFailure(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    A part that fails every retry fails the client's upload at a WRITE,
    before CLOSE (the client is still sending: its window holds less than
    the file), and leaves no object and no multipart upload; the gateway
    then stores the next file.
    """
    gateway = startGateway(proxy.endpointURL, "--upload-concurrency=1", "--buffer-limit=7MiB")
    gateway.addUser("alice")
    proxy.rules.append(
        lambda method, path: (
            Fault(status=500) if isPart(method, path, 1) and "/alice/big" in path else None
        )
    )
    source = makeFile(tmp_path, "big", 8 * PART)
    result = gateway.sftp("alice", [f"put {source}"])
    assert result.returncode != 0
    assert "write" in result.stderr.lower(), result.stderr
    # botocore's standard mode: one try and 5 retries, then give up.
    assert len(proxy.faults) == 6
    assertNothingLeft(s3, bucket, "alice/")

    good = makeFile(tmp_path, "good", 10)
    assert gateway.sftp("alice", [f"put {good}"]).returncode == 0
    assertStored(s3, bucket, "alice/good", good)


def test_checksumMismatch(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    A part or a whole object whose bytes are corrupted on the way to S3
    is refused by S3 for its checksum: the upload fails and never becomes
    an object.
    """
    gateway = startGateway(proxy.endpointURL)
    gateway.addUser("alice")
    proxy.rules.append(
        lambda method, path: (
            Fault(corrupt=True)
            if (
                isPart(method, path, 2)
                or (method == "PUT" and path.startswith(f"/{bucket}/alice/small"))
            )
            else None
        )
    )
    big = makeFile(tmp_path, "big", 3 * PART + 7)
    small = makeFile(tmp_path, "small", 1000)
    assert gateway.sftp("alice", [f"put {big}"]).returncode != 0
    assert gateway.sftp("alice", [f"put {small}"]).returncode != 0
    assert {label for _, _, label in proxy.faults} == {"corrupt"}
    assertNothingLeft(s3, bucket, "alice/")
    log = gateway.log.read_text()
    assert "BadDigest" in log, log


def test_paramikoPipelinedBounded(
    startGateway: Any, proxy: FaultProxy, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    paramiko's C{putfo} pipelines writes without any limit of its own; with
    a slow S3 the gateway still holds it to its memory limit through the
    SSH window, and the file arrives intact (C{putfo} then checks its size
    with C{stat}).
    """
    import paramiko

    gateway = startGateway(
        proxy.endpointURL,
        "--upload-concurrency=1",
        "--buffer-limit=7MiB",
        "--memory-limit=7MiB",
    )
    keyPath = gateway.addUser("alice")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=gateway.port,
        username="alice",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(keyPath)),
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        sftp = client.open_sftp()
        warmUp = makeFile(tmp_path, "warm", PART + 1)
        with warmUp.open("rb") as f:
            sftp.putfo(f, "warm")
        baseline = memoryKiB(gateway.process.pid, "VmHWM")
        proxy.rules.append(lambda method, path: Fault(delay=0.3) if isPart(method, path) else None)
        source = makeFile(tmp_path, "big", 32 * MiB)
        with source.open("rb") as f:
            attrs = sftp.putfo(f, "big")
        assert attrs.st_size == 32 * MiB
        growth = memoryKiB(gateway.process.pid, "VmHWM") - baseline
    finally:
        client.close()
    assertStored(s3, bucket, "alice/big", source)
    # It grew by 2 MiB with the window withheld and 24 MiB without.
    assert growth < 16 * 1024, f"peak RSS grew by {growth} KiB"
