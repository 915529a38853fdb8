"""
Bursts are served, not refused: the admission queue and the connection
cap, driven with OpenSSH clients and raw sockets over loopback addresses.

A partner's batch job behind one NAT is 127.0.0.1; a flooding address is
127.0.0.3; another partner is 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.tools.seaweedfs import LocalS3

from .conftest import Gateway, asyncsshConnect, moduleGateway, sftpCommand


def cpuSeconds(pid: int) -> float:
    """
    @return: the user and system CPU seconds of process C{pid} so far.
    """
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, localS3: LocalS3) -> Iterator[Gateway]:
    """
    One gateway with default limits and a user C{alice}.
    """
    assert shutil.which("sftp"), "OpenSSH's sftp is required (.ci/run installs it)"
    with moduleGateway(tmp_path_factory.mktemp("admission"), localS3, "adm") as gateway:
        yield gateway


def startUploads(door: Gateway, source: str, names: list[str]) -> list[subprocess.Popen[str]]:
    """
    Start one OpenSSH C{sftp} upload from C{source} per name, all at once,
    each of a file of a few KiB named after it.

    @return: the processes.
    """
    processes = []
    for name in names:
        local = door.root / f"{name}.txt"
        local.write_bytes(name.encode("ascii") * (4096 // len(name)))
        batch = door.root / f"{name}.batch"
        batch.write_text(f"put {local} {name}.txt\n")
        processes.append(
            subprocess.Popen(
                [
                    *sftpCommand(door.port, door.root / "alice_key"),
                    "-o",
                    f"BindAddress={source}",
                    "-b",
                    str(batch),
                    "alice@127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def assertAllStored(door: Gateway, s3: Any, processes: list[Any], names: list[str]) -> None:
    """
    Every upload exited 0 (so its CLOSE was answered OK) and its object
    is intact.
    """
    failures = []
    for process, name in zip(processes, names, strict=True):
        _, errors = process.communicate(timeout=240)
        if process.returncode != 0:
            failures.append((name, process.returncode, errors.strip()[-200:]))
    assert not failures, f"{len(failures)} of {len(names)} failed: {failures[:5]}"
    for name in names:
        stored = s3.get_object(Bucket=door.bucket, Key=f"alice/{name}.txt")["Body"].read()
        assert stored == (door.root / f"{name}.txt").read_bytes(), name


def test_burstFromOneAddress(door: Gateway, s3: Any) -> None:
    """
    200 OpenSSH uploads started at once from one address, with the
    default limits, all exit 0 with every object intact: over the caps
    they wait rather than being refused, and nothing is refused.
    """
    names = [f"burst{n:03d}" for n in range(200)]
    processes = startUploads(door, "127.0.0.1", names)
    assertAllStored(door, s3, processes, names)
    assert "Refused" not in door.log.read_text()


def test_floodDoesNotStarve(door: Gateway, s3: Any) -> None:
    """
    While 127.0.0.3 holds 500 connections that never send a banner, 20
    simultaneous uploads from 127.0.0.1 all succeed and a login from
    127.0.0.2 completes within 5 s; the flood's excess is refused at once
    and counted in the log by reason, and the flooding server stays idle.
    """
    held = []
    try:
        for _ in range(500):
            sock = socket.socket()
            sock.settimeout(10)
            sock.bind(("127.0.0.3", 0))
            sock.connect(("127.0.0.1", door.port))
            held.append(sock)
        before = cpuSeconds(door.process.pid)
        time.sleep(1)
        assert cpuSeconds(door.process.pid) - before < 0.5
        names = [f"flood{n:02d}" for n in range(20)]
        processes = startUploads(door, "127.0.0.1", names)
        start = time.monotonic()
        login = door.sftp("alice", ["pwd"], "-o", "BindAddress=127.0.0.2", timeout=30)
        elapsed = time.monotonic() - start
        assert login.returncode == 0, login.stderr
        assert elapsed < 5
        assertAllStored(door, s3, processes, names)
        # Past its 10 slots and 256 places in the queue, the flood was
        # refused: those sockets are closed without a banner.
        closed = 0
        for sock in held:
            sock.settimeout(0.05)
            try:
                if sock.recv(64) == b"":
                    closed += 1
            except (TimeoutError, ConnectionResetError):
                pass
        assert closed >= 500 - 10 - 256
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 15
    while "too many connections waiting from this source" not in door.log.read_text():
        assert time.monotonic() < deadline, "the refusals were never summarised"
        time.sleep(0.2)


def test_descriptorLimit(startGateway: Any) -> None:
    """
    Under a limit of 192 open files (64 connections), 70 logged-in
    connections neither exhaust the descriptors nor spin the server: the
    last ones wait in the listen backlog while it stays idle, and are
    served once others close; an upload works afterwards.
    """
    door = startGateway(None, openFiles=192)
    door.addUser("alice")
    log = door.log.read_text()
    assert "allows 64 connections" in log, log

    async def hold() -> None:
        connections: list[Any] = []

        async def connect() -> None:
            connections.append(await asyncsshConnect(door, "alice", login_timeout=60))

        # In batches within the per-source cap (at this limit, 10 served
        # and 16 queued), so that none is refused.
        for _ in range(8):
            await asyncio.gather(*(connect() for _ in range(8)))
        pending = [asyncio.ensure_future(connect()) for _ in range(6)]
        await asyncio.sleep(2)
        assert len(connections) == 64
        before = cpuSeconds(door.process.pid)
        await asyncio.sleep(2)
        assert cpuSeconds(door.process.pid) - before < 0.5
        for connection in connections[:20]:
            connection.close()
            await connection.wait_closed()
        await asyncio.wait_for(asyncio.gather(*pending), 30)
        assert len(connections) == 70
        for connection in connections[20:]:
            connection.close()
            await connection.wait_closed()

    asyncio.run(hold())
    local = door.root / "after.txt"
    local.write_bytes(b"after")
    assert door.sftp("alice", [f"put {local} after.txt"]).returncode == 0
    assert "Not accepting connections for now" in door.log.read_text()


def test_perUserCapNamed(startGateway: Any) -> None:
    """
    A login past the per-user cap is disconnected with a message naming
    the limit, which OpenSSH's client shows, not with a bare close.
    """
    door = startGateway(None, "--max-user-connections=1")
    door.addUser("alice")

    async def second() -> subprocess.CompletedProcess[str]:
        async with asyncsshConnect(door, "alice"):
            return await asyncio.to_thread(door.sftp, "alice", ["pwd"])

    refused = asyncio.run(second())
    assert refused.returncode != 0
    assert "too many connections for this user (at most 1)" in refused.stderr
    assert door.sftp("alice", ["pwd"]).returncode == 0
