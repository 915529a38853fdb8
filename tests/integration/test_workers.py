"""
C{--workers N}, for real: the parent hands connections to its workers in
turn, restarts one killed with SIGKILL while the other keeps serving, sums
their metrics, and drains them all on SIGTERM.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .conftest import Gateway, asyncsshConnect, keys, objectBytes, sftpCommand

MiB = 1024 * 1024


def fetch(gateway: Gateway, path: str) -> tuple[int, str]:
    """
    @return: the status and body of C{path} on the parent's metrics
        endpoint.
    """
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{gateway.metricsPort()}{path}", timeout=15
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(page: str, name: str) -> float:
    """
    @return: the value of sample C{name} (with its labels, as written) in
        a C{/metrics} page.
    """
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in {page}")


def waitFor(condition: Any, what: str, timeout: float = 45.0) -> Any:
    """
    @return: the first true value of C{condition()}, polled.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def waitForWorkers(gateway: Gateway, count: int) -> None:
    """
    Wait until C{count} workers take connections.
    """

    def ready() -> bool:
        status, page = fetch(gateway, "/metrics")
        return status == 200 and sample(page, "s3sftp_workers") == count

    waitFor(ready, f"{count} workers")


def workerPids(gateway: Gateway) -> dict[int, int]:
    """
    @return: the pid of each worker, by number, as the parent last logged
        it.
    """
    started = re.findall(r"Worker (\d+) started \(pid (\d+)\)", gateway.log.read_text())
    return {int(index): int(pid) for index, pid in started}


def workerOf(gateway: Gateway, user: str) -> int:
    """
    @return: the number of the worker that logged C{user}'s login.
    """
    pattern = re.compile(rf"\[worker (\d+)[^\]]*\] login success for {user} ")

    def find() -> int | None:
        match = pattern.search(gateway.log.read_text())
        return int(match.group(1)) if match else None

    return waitFor(find, f"{user}'s login")


def put(gateway: Gateway, user: str, source: Path, name: str) -> subprocess.CompletedProcess[str]:
    """
    @return: OpenSSH C{sftp}'s C{put}, finished (exit status 0 only if
        CLOSE was answered OK).
    """
    return gateway.sftp(user, [f"put {source} {name}"])


def test_workersShareConnectionsAndMetrics(
    startGateway: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    With C{--workers 2}, successive connections land on both workers
    (each login is logged by the worker that served it), uploads through
    both are stored, and the parent's C{/metrics} is the workers' sum
    (uploads stored, in one series), with C{s3sftp_workers} 2, while
    C{/healthz} answers 200 for both.
    """
    gateway = startGateway(None, "--workers=2", "--metrics=tcp:0:interface=127.0.0.1")
    gateway.addUser("wanda")
    waitForWorkers(gateway, 2)
    source = tmp_path / "small.txt"
    source.write_bytes(b"hello workers\n" * 100)
    for number in range(4):
        result = put(gateway, "wanda", source, f"f{number}.txt")
        assert result.returncode == 0, result.stderr
    assert keys(s3, bucket, "wanda/") == [f"wanda/f{n}.txt" for n in range(4)]
    log = gateway.log.read_text()
    served = set(re.findall(r"\[worker (\d+)[^\]]*\] login success for wanda", log))
    assert served == {"1", "2"}, log
    status, page = fetch(gateway, "/metrics")
    assert status == 200
    assert sample(page, 's3sftp_uploads_total{outcome="stored"}') == 4
    assert sample(page, 's3sftp_logins_total{outcome="success"}') == 4
    assert sample(page, "s3sftp_workers") == 2
    assert page.count("# TYPE s3sftp_uploads_total counter") <= 1
    status, body = fetch(gateway, "/healthz")
    assert status == 200, body
    assert "worker 1: ok" in body and "worker 2: ok" in body
    # The workers' metrics sockets are abstract: no file, and no NUL byte
    # in the log where Twisted names them.
    assert "\0" not in gateway.log.read_text()


def test_workersServeABurst(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A partner's batch of 40 OpenSSH C{sftp put}s at once from one address
    through C{--workers 2}: every client exits 0 (every CLOSE answered
    OK), every object is stored, and both workers served some.
    """
    gateway = startGateway(None, "--workers=2", "--metrics=tcp:0:interface=127.0.0.1")
    key = gateway.addUser("batch")
    waitForWorkers(gateway, 2)
    source = tmp_path / "report.csv"
    source.write_bytes(os.urandom(64 * 1024))

    def one(number: int) -> subprocess.CompletedProcess[str]:
        batch = tmp_path / f"batch{number}"
        batch.write_text(f"put {source} r{number:02d}.csv\n")
        return subprocess.run(
            [*sftpCommand(gateway.port, key), "-b", str(batch), "batch@127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    failed = [r.stderr for r in results if r.returncode != 0]
    assert not failed, failed[:3]
    assert len(keys(s3, bucket, "batch/")) == 40
    log = gateway.log.read_text()
    perWorker = [len(re.findall(rf"\[worker {n}[^\]]*\] upload stored", log)) for n in (1, 2)]
    assert sum(perWorker) == 40 and min(perWorker) >= 10, perWorker


def test_killedWorkerAndDrain(startGateway: Any, bucket: str, s3: Any) -> None:
    """
    One of two workers killed with SIGKILL: the upload it was running
    fails on its client and leaves no object; the upload on the other
    worker goes on and is stored (CLOSE answered OK); the parent starts a
    new worker (its restart counted in C{/metrics}), and new connections
    are served.  Then SIGTERM to the parent: an upload open at the signal
    finishes and is stored, and the parent and both workers exit, cleanly
    though each worker got SIGTERM twice (its own, and the parent's).
    """
    gateway = startGateway(
        None, "--workers=2", "--metrics=tcp:0:interface=127.0.0.1", "--drain-timeout=20"
    )
    for user in ("kim", "kim1", "kim2"):
        gateway.addUser(user)
    waitForWorkers(gateway, 2)
    first, rest = os.urandom(6 * MiB), os.urandom(2 * MiB)

    async def scenario() -> None:
        async with (
            asyncsshConnect(gateway, "kim1") as one,
            asyncsshConnect(gateway, "kim2") as two,
        ):
            workers = {workerOf(gateway, "kim1"): one, workerOf(gateway, "kim2"): two}
            assert set(workers) == {1, 2}
            killed, kept = workers[1], workers[2]
            async with killed.start_sftp_client() as doomed, kept.start_sftp_client() as sftp:
                lost = await doomed.open("lost.bin", "wb")
                await lost.write(first)
                survivor = await sftp.open("kept.bin", "wb")
                await survivor.write(first)
                oldPid = workerPids(gateway)[1]
                os.kill(oldPid, signal.SIGKILL)
                failedOnClient = False
                try:
                    await lost.write(rest, len(first))
                    await lost.close()
                except Exception:
                    failedOnClient = True
                assert failedOnClient
                # AsyncSSH raises unless CLOSE is answered OK.
                await survivor.write(rest, len(first))
                await survivor.close()

    asyncio.run(scenario())
    keptBy = "kim2" if workerOf(gateway, "kim1") == 1 else "kim1"
    lostBy = "kim1" if keptBy == "kim2" else "kim2"
    assert objectBytes(s3, bucket, f"{keptBy}/kept.bin") == first + rest
    assert keys(s3, bucket, f"{lostBy}/") == []
    waitFor(lambda: len(re.findall(r"Worker 1 started", gateway.log.read_text())) == 2, "restart")
    waitForWorkers(gateway, 2)
    status, page = fetch(gateway, "/metrics")
    assert sample(page, "s3sftp_worker_restarts_total") == 1
    assert "Worker 1 (pid" in gateway.log.read_text() and "killed by SIGKILL" in (
        gateway.log.read_text()
    )
    # Both workers serve again.
    source = gateway.root / "after.txt"
    source.write_bytes(b"after the restart\n")
    for number in range(2):
        result = put(gateway, "kim", source, f"after{number}.txt")
        assert result.returncode == 0, result.stderr
    pids = list(workerPids(gateway).values())

    async def drained() -> None:
        async with asyncsshConnect(gateway, "kim") as connection:
            async with connection.start_sftp_client() as sftp:
                upload = await sftp.open("drained.bin", "wb")
                await upload.write(first)
                gateway.process.send_signal(signal.SIGTERM)
                # As systemd's KillMode=control-group does: the workers get
                # it too, then the parent's.
                for pid in pids:
                    os.kill(pid, signal.SIGTERM)
                await asyncio.sleep(1)
                await upload.write(rest, len(first))
                await upload.close()

    asyncio.run(drained())
    # twistd ends by the signal it was stopped with, as one server does.
    assert gateway.process.wait(timeout=60) == -signal.SIGTERM
    digest = hashlib.sha256(objectBytes(s3, bucket, "kim/drained.bin")).digest()
    assert digest == hashlib.sha256(first + rest).digest()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    log = gateway.log.read_text()
    assert "Worker 1 (pid" in log and "has stopped" in log


def test_rcloneCopyThroughWorkers(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    rclone's C{copy} through C{--workers 2}: its connections land on both
    workers, so a file one worker stored is then timed (SETSTAT) and
    C{stat}ed by the other, whose directory cache listed the directory
    before the file was there.  Each worker asks S3 before it calls a name
    absent, so rclone exits 0 (it checks each CLOSE, size and hash) and
    every file is stored intact.
    """
    from .conftest import rcloneCopy, rcloneEnvironment, writeReports

    source = tmp_path / "reports"
    files = 60
    writeReports(source, files, 100)
    gateway = startGateway(None, "--workers=2", "--metrics=tcp:0:interface=127.0.0.1")
    key = gateway.addUser("rosa")
    waitForWorkers(gateway, 2)
    env = rcloneEnvironment(tmp_path / "rclone.conf", gateway.port, "rosa", key)
    rcloneCopy(env, source, "gw:up")
    logins = re.findall(r"\[worker (\d+)[^\]]*\] login success for rosa ", gateway.log.read_text())
    assert set(logins) == {"1", "2"}, logins
    for n in range(files):
        assert (
            objectBytes(s3, bucket, f"rosa/up/r{n:02d}.csv")
            == (source / f"r{n:02d}.csv").read_bytes()
        )
