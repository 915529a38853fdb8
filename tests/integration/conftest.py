"""
Fixtures for the integration tests: one real SeaweedFS S3 for the whole
session, real C{twistd s3sftp} gateways on C{tcp:0}, and the real OpenSSH
C{sftp} client.

Nothing here is skipped when a tool is missing: a missing C{sftp} or
C{weed} is an error, so CI cannot pass without running these tests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faultproxy import FaultProxy
from twisted_s3sftp.tools.demo import makeUserKey
from twisted_s3sftp.tools.seaweedfs import LocalS3, credentialsEnvironment

MiB = 1024 * 1024
PART = 5 * MiB

_LISTENING = re.compile(r"s3sftp listening on 127\.0\.0\.1:(\d+)")
_METRICS = re.compile(r"metrics listening on 127\.0\.0\.1:(\d+)")


def twistdBinary() -> str:
    """
    @return: the C{twistd} of the interpreter running the tests.
    """
    beside = Path(sys.executable).parent / "twistd"
    return str(beside) if beside.exists() else "twistd"


@pytest.fixture(scope="session")
def localS3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """
    One SeaweedFS server shared by every integration test.
    """
    assert shutil.which("sftp"), "OpenSSH sftp is required (apt-get install openssh-client)"
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(localS3: LocalS3) -> str:
    """
    A fresh bucket for one test.
    """
    name = "t-" + uuid.uuid4().hex[:20]
    localS3.createBucket(name)
    return name


@pytest.fixture
def s3(localS3: LocalS3) -> Any:
    """
    A boto3 client for checking what the gateway stored.
    """
    return localS3.client()


class Gateway:
    """
    One C{twistd -n s3sftp} process.

    @ivar port: the SFTP port it bound.
    @ivar bucket: the bucket it serves.
    @ivar keysDir: its keys directory.
    @ivar log: its log file.
    """

    # openFiles: run it under that limit on open files (soft and hard).
    def __init__(
        self,
        root: Path,
        bucket: str,
        endpointURL: str,
        *extra: str,
        keysDir: Path | None = None,
        hostKey: Path | None = None,
        listen: str = "tcp:0:interface=127.0.0.1",
        openFiles: int | None = None,
    ) -> None:
        self.root = root
        self.bucket = bucket
        root.mkdir(parents=True, exist_ok=True)
        self.keysDir = keysDir or root / "keys"
        self.keysDir.mkdir(parents=True, exist_ok=True)
        hostKey = hostKey or root / "host_key"
        self.log = root / "gateway.log"
        command = [
            twistdBinary(),
            "-n",
            "--pidfile=",
            f"--logfile={self.log}",
            "s3sftp",
            f"--bucket={bucket}",
            f"--endpoint-url={endpointURL}",
            f"--listen={listen}",
            f"--keys-dir={self.keysDir}",
            f"--host-key={hostKey}",
            "--part-size=5MiB",
            # The tests' own failed logins must not lock 127.0.0.1 out;
            # penalties are tested from other loopback addresses.
            "--penalty-exempt=127.0.0.1",
            *extra,
        ]
        from twisted.python.filepath import FilePath

        from twisted_s3sftp.ssh.keys import ensurePrivateKey

        ensurePrivateKey(FilePath(str(hostKey)))
        env = dict(os.environ, **credentialsEnvironment())

        def limitOpenFiles() -> None:
            if openFiles is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (openFiles, openFiles))

        self.process = subprocess.Popen(
            command,
            env=env,
            preexec_fn=limitOpenFiles,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        self.port = self._waitForPort(_LISTENING)

    def _waitForPort(self, listening: re.Pattern[str], timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists():
                match = listening.search(self.log.read_text())
                if match:
                    return int(match.group(1))
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"gateway exited {self.process.returncode}: {output}")
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not log {listening.pattern!r}")

    def metricsPort(self) -> int:
        """
        @return: the port of the C{--metrics} endpoint, once it listens (it
            starts after the SFTP port; with C{--workers}, after the
            workers).
        """
        return self._waitForPort(_METRICS)

    def addUser(self, name: str) -> Path:
        """
        Make a key pair and drop the public key in as C{<name>.pub}.

        @return: the private key's path.
        """
        private = self.root / f"{name}_key"
        makeUserKey(private, self.keysDir / f"{name}.pub", f"{name}@test")
        return private

    def sftp(
        self, user: str, commands: list[str], *options: str, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """
        Run OpenSSH C{sftp -b} as C{user}, with extra C{options}.

        @return: the finished process (its exit status is 0 only if every
            command succeeded).
        """
        batch = self.root / f"batch-{uuid.uuid4().hex}"
        batch.write_text("\n".join(commands) + "\n")
        return subprocess.run(
            [
                *sftpCommand(self.port, self.root / f"{user}_key"),
                *options,
                "-b",
                str(batch),
                f"{user}@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def diskWrites(self) -> int:
        """
        @return: bytes this process caused to be written to storage so far
            (C{/proc/PID/io} C{write_bytes}).
        """
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        raise AssertionError("no write_bytes in /proc/PID/io")

    def stop(self) -> str:
        """
        Stop the gateway.

        @return: its log.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        return self.log.read_text() if self.log.exists() else ""


#: Options making OpenSSH clients non-interactive.
BATCH_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
]

#: Options making OpenSSH clients non-interactive and quiet.
SSH_OPTIONS = [*BATCH_OPTIONS, "-o", "LogLevel=ERROR"]


def rcloneEnvironment(config: Path, port: int, user: str, key: Path) -> dict[str, str]:
    """
    Write an empty rclone config at C{config} and return an environment
    that gives rclone the remote C{gw:}: sftp to 127.0.0.1:C{port} as
    C{user} with the private key C{key} (and no CA bundle of the test S3's,
    which rclone's sftp backend does not need).
    """
    config.write_text("")
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | {
        "RCLONE_CONFIG": str(config),
        "RCLONE_CONFIG_GW_TYPE": "sftp",
        "RCLONE_CONFIG_GW_HOST": "127.0.0.1",
        "RCLONE_CONFIG_GW_PORT": str(port),
        "RCLONE_CONFIG_GW_USER": user,
        "RCLONE_CONFIG_GW_KEY_FILE": str(key),
    }


def sftpCommand(port: int, key: Path) -> list[str]:
    """
    @return: the OpenSSH C{sftp} command line, non-interactive.
    """
    return ["sftp", "-P", str(port), "-i", str(key), *SSH_OPTIONS]


@pytest.fixture
def startGateway(tmp_path: Path, localS3: LocalS3, bucket: str) -> Iterator[Any]:
    """
    Start gateways for one test (on its fresh bucket unless told
    otherwise); each is stopped afterwards and its log must hold no
    traceback.
    """
    started: list[Gateway] = []

    def start(endpointURL: str | None = None, *extra: str, **options: Any) -> Gateway:
        gateway = Gateway(
            tmp_path / f"gw{len(started)}",
            bucket,
            endpointURL or localS3.endpointURL,
            *extra,
            **options,
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        assertCleanLog(gateway.stop())


def assertCleanLog(log: str) -> None:
    """
    A gateway's log must end the test free of tracebacks.
    """
    assert "Traceback" not in log, log
    assert "Unhandled error" not in log, log


@contextlib.contextmanager
def moduleGateway(root: Path, localS3: LocalS3, prefix: str) -> Iterator[Gateway]:
    """
    A gateway with a user C{alice} in a bucket of its own, for a module's
    tests; its log is checked when it stops.
    """
    bucket = f"{prefix}-" + uuid.uuid4().hex[:20]
    localS3.createBucket(bucket)
    gateway = Gateway(root / "gw", bucket, localS3.endpointURL)
    gateway.addUser("alice")
    try:
        yield gateway
    finally:
        assertCleanLog(gateway.stop())


@pytest.fixture
def gateway(startGateway: Any) -> Gateway:
    """
    One gateway on this test's bucket.
    """
    return startGateway()


def sha256(data: bytes) -> str:
    """
    @return: the hex SHA-256 of C{data}.
    """
    return hashlib.sha256(data).hexdigest()


def objectBytes(s3: Any, bucket: str, key: str) -> bytes:
    """
    @return: the content of an object.
    """
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def multipartUploads(s3: Any, bucket: str) -> list[str]:
    """
    @return: the keys of the bucket's unfinished multipart uploads.
    """
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """
    @return: every object key under C{prefix}.
    """
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def assertStored(s3: Any, bucket: str, key: str, source: Path) -> None:
    """
    Assert the object at C{key} has C{source}'s bytes, its SHA-256 in
    C{x-amz-meta-sha256} and its MD5 in C{x-amz-meta-md5chksum} (and the
    saved states of those hashes), its uploader (the user of its home, the
    first component of C{key}) in C{x-amz-meta-uploader}, and nothing else
    but the time a client set.
    """
    data = source.read_bytes()
    expected = sha256(data)
    assert sha256(objectBytes(s3, bucket, key)) == expected
    metadata = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    metadata.pop("mtime", None)
    assert "md5-state" in metadata
    metadata.pop("md5-state")
    assert hashState(metadata.pop("sha256-state")) == expected
    assert metadata == {
        "sha256": expected,
        "md5chksum": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "uploader": key.split("/")[0],
    }


def hashState(state: str) -> str:
    """
    @return: the hex SHA-256 a saved hash state (C{x-amz-meta-sha256-state})
        stands for.
    """
    from twisted_s3sftp.store.hashes import ResumableSHA256

    return ResumableSHA256.fromState(base64.b64decode(state)).hexdigest()


@contextlib.contextmanager
def paramikoSFTP(gateway: Gateway, user: str) -> Iterator[Any]:
    """
    A paramiko SFTP session to C{gateway} as C{user}, closed afterwards.
    """
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=gateway.port,
        username=user,
        pkey=paramiko.Ed25519Key.from_private_key_file(str(gateway.root / f"{user}_key")),
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        yield client.open_sftp()
    finally:
        client.close()


def slowSftp(
    gateway: Gateway, user: str, key: Path, batch: Path, kbits: int, **popen: Any
) -> subprocess.Popen[str]:
    """
    Start OpenSSH C{sftp -b} as C{user}, its rate limited to C{kbits}
    Kbit/s (C{-l}) so that a transfer is still running when the test acts.
    """
    return subprocess.Popen(
        [*sftpCommand(gateway.port, key), "-l", str(kbits), "-b", str(batch), f"{user}@127.0.0.1"],
        stdin=subprocess.DEVNULL,
        text=True,
        **popen,
    )


def asyncsshConnect(gateway: Gateway, user: str, **options: Any) -> Any:
    """
    @return: AsyncSSH's connection to C{gateway} as C{user} (an async
        context manager), with C{options} such as C{kex_algs}.
    """
    import asyncssh

    return asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=user,
        client_keys=[str(gateway.root / f"{user}_key")],
        known_hosts=None,
        **options,
    )


@pytest.fixture
def proxy(localS3: Any) -> Iterator[FaultProxy]:
    """
    A fault proxy in front of the session's S3.
    """
    proxy = FaultProxy(localS3.s3Port)
    yield proxy
    proxy.stop()


def memoryKiB(pid: int, field: str) -> int:
    """
    @return: a C{/proc/PID/status} memory figure (C{VmRSS}, C{VmHWM}) in KiB.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def writeReports(directory: Path, count: int, lines: int) -> None:
    """
    Make C{count} small files C{r00.csv}, C{r01.csv}, ... of C{lines}
    lines in C{directory}, each with its own time, as a sync job's source.
    """
    directory.mkdir()
    for n in range(count):
        path = directory / f"r{n:02d}.csv"
        path.write_bytes(f"report {n}\n".encode() * lines)
        os.utime(path, (1600000000 + n, 1600000000 + n))


def rcloneCopy(env: dict[str, str], source: Path, remote: str) -> None:
    """
    Run C{rclone copy} of C{source} to C{remote} (rclone's defaults, one
    try) and assert that it exits 0: rclone checks each CLOSE, size and
    hash.
    """
    result = subprocess.run(
        ["rclone", "--retries", "1", "copy", str(source), remote],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
