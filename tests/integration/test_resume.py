"""
Interrupted uploads continued by real clients, on a real S3: OpenSSH
C{reput}, lftp's own retry through a cut connection and C{put -c}, the
WinSCP C{.filepart} sequence and paramiko C{"ab"} (both at packet level, so
that CLOSE's status is seen), C{curl -C -}; on a second server, after the
first was killed with SIGKILL, with two claimants, a wrong offset, and the
TTL sweep.  Every final object is byte-identical to its source, with the
SHA-256 of the whole file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.store.resume import PARKED, LeaseRecord, decodeRecord

from .conftest import (
    PART,
    SSH_OPTIONS,
    Gateway,
    MiB,
    assertStored,
    multipartUploads,
    objectBytes,
    paramikoSFTP,
    sftpCommand,
    slowSftp,
)
from .test_openssh import makeFile, waitFor

LEASES = ".s3sftp/uploads/"

#: OPEN flags (SSH_FXF_*).
WRITE, CREAT, APPEND = 0x02, 0x08, 0x04

#: SFTP packet types paramiko sends with its low-level _request.
OPEN, CLOSE, WRITE_PACKET, REMOVE, RENAME = 3, 4, 6, 13, 18


def leaseRecords(s3: Any, bucket: str) -> list[LeaseRecord]:
    """
    @return: the records of the bucket's leases.
    """
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=LEASES).get("Contents", [])
    records = []
    for info in listed:
        try:
            body = s3.get_object(Bucket=bucket, Key=info["Key"])["Body"].read()
        except s3.exceptions.NoSuchKey:
            # Deleted between the listing and the read: the gateway deletes
            # a lease after the upload's end, not before CLOSE's reply.
            continue
        records.append(decodeRecord(body))
    return records


def waitNoLeases(s3: Any, bucket: str) -> None:
    """
    Wait until the bucket holds no lease: deleting one follows the end of
    its upload (L{twisted_s3sftp.store.leases.Lease.end}) without holding
    up CLOSE's reply or the abort.
    """
    waitFor(lambda: leaseRecords(s3, bucket) == [], 30, 0.05)


def waitParked(s3: Any, bucket: str, key: str, timeout: float = 60) -> LeaseRecord:
    """
    @return: the record of C{key}'s parked upload, once it is parked.
    """
    found = waitFor(
        lambda: [r for r in leaseRecords(s3, bucket) if r.key == key and r.state == PARKED],
        timeout,
    )
    record: LeaseRecord = found[0]
    return record


def partsStored(s3: Any, bucket: str, key: str) -> int:
    """
    @return: how many parts the multipart upload to C{key} has stored.
    """
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        if upload["Key"] == key:
            listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            return len(listed.get("Parts", []))
    return 0


def assertDone(s3: Any, bucket: str, key: str, source: Path) -> None:
    """
    The object at C{key} is C{source} with its hashes, carried over every
    resume (L{assertStored}); no multipart upload and no lease is left.
    """
    assertStored(s3, bucket, key, source)
    assert multipartUploads(s3, bucket) == []
    waitNoLeases(s3, bucket)


def slowPut(gateway: Gateway, source: Path, user: str = "alice") -> subprocess.Popen[str]:
    """
    Start a rate-limited OpenSSH C{put} of C{source} as C{user}, in a
    process group of its own (so that killing it kills its C{ssh} too).
    """
    batch = gateway.root / f"put-{source.name}"
    batch.write_text(f"put {source}\n")
    return slowSftp(
        gateway,
        user,
        gateway.root / f"{user}_key",
        batch,
        24000,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def sameKeys(startGateway: Any, first: Gateway, *extra: str, user: str = "alice") -> Gateway:
    """
    @return: another gateway on the bucket, reading C{first}'s keys
        directory, with C{user}'s private key beside it.
    """
    other: Gateway = startGateway(None, *extra, keysDir=first.keysDir)
    key = other.root / f"{user}_key"
    key.write_bytes((first.root / f"{user}_key").read_bytes())
    key.chmod(0o600)
    return other


def interruptedPut(
    gateway: Gateway, s3: Any, bucket: str, source: Path, user: str = "alice", parts: int = 2
) -> LeaseRecord:
    """
    Start a rate-limited OpenSSH C{put} of C{source}, kill the client once
    C{parts} parts are stored, and wait for the upload to be parked.
    """
    client = slowPut(gateway, source, user)
    key = f"{user}/{source.name}"
    try:
        waitFor(lambda: partsStored(s3, bucket, key) >= parts, 60, 0.05)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    return waitParked(s3, bucket, key)


def test_reputAfterKill(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    OpenSSH C{put} killed after some parts: the upload is parked, C{ls -l}
    shows the bytes stored (whole parts), and C{reput} sends the rest:
    C{sftp} exits 0 (CLOSE answered OK) and the object is the whole file.
    """
    gateway.addUser("alice")
    source = makeFile(tmp_path, "big.bin", 4 * PART + 1234)
    record = interruptedPut(gateway, s3, bucket, source)
    assert record.stored % PART == 0 and 0 < record.stored < source.stat().st_size
    listing = gateway.sftp("alice", ["ls -l"])
    assert listing.returncode == 0, listing.stderr
    assert f" {record.stored} " in listing.stdout, listing.stdout
    result = gateway.sftp("alice", [f"reput {source}"])
    assert result.returncode == 0, result.stderr
    assertDone(s3, bucket, "alice/big.bin", source)
    assert "outcome=parked" in gateway.log.read_text() or "parked" in gateway.log.read_text()


def test_resumeOnSecondServer(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    An upload parked on one server is seen (C{ls -l}) and resumed
    (C{reput}) through another server on the bucket.
    """
    first = startGateway()
    first.addUser("alice")
    second = sameKeys(startGateway, first)
    source = makeFile(tmp_path, "big.bin", 4 * PART + 99)
    record = interruptedPut(first, s3, bucket, source)
    listing = second.sftp("alice", ["ls -l"])
    assert f" {record.stored} " in listing.stdout, listing.stdout
    result = second.sftp("alice", [f"reput {source}"])
    assert result.returncode == 0, result.stderr
    assertDone(s3, bucket, "alice/big.bin", source)


def test_resumeAfterSigkill(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A server killed with SIGKILL mid-upload leaves the upload resumable
    from its last lease checkpoint: once the lease is stale (three lease
    intervals), C{reput} through another server completes it.
    """
    crashed = startGateway(None, "--lease-interval=1")
    crashed.addUser("alice")
    source = makeFile(tmp_path, "big.bin", 5 * PART + 7)
    client = slowPut(crashed, source)
    try:
        waitFor(lambda: partsStored(s3, bucket, "alice/big.bin") >= 2, 60, 0.05)
        waitFor(lambda: any(r.stored for r in leaseRecords(s3, bucket)), 10, 0.1)
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(timeout=10)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    (record,) = leaseRecords(s3, bucket)
    assert record.state != PARKED and record.stored >= PART
    other = sameKeys(startGateway, crashed, "--lease-interval=1")
    time.sleep(3.5)
    result = other.sftp("alice", [f"reput {source}"])
    assert result.returncode == 0, result.stderr
    assertDone(s3, bucket, "alice/big.bin", source)


def rawOpen(sftp: Any, path: str, flags: int) -> bytes:
    """
    @return: the handle of an OPEN with exactly C{flags}.
    """
    import paramiko

    t, message = sftp._request(OPEN, path, flags, paramiko.SFTPAttributes())
    handle: bytes = message.get_binary()
    return handle


def rawWrite(sftp: Any, handle: bytes, data: bytes, start: int) -> None:
    """
    WRITE C{data} from offset C{start}, 32 KiB per request, each answered.
    """
    from paramiko.sftp import int64

    for offset in range(0, len(data), 32768):
        sftp._request(WRITE_PACKET, handle, int64(start + offset), data[offset : offset + 32768])


def cutUpload(gateway: Gateway, s3: Any, bucket: str, path: str, data: bytes, parts: int) -> None:
    """
    Upload C{data} to C{path} with paramiko and drop the connection once
    C{parts} parts are stored, without a CLOSE; wait for the park.
    """
    key = f"alice/{path}"
    with paramikoSFTP(gateway, "alice") as sftp:
        handle = rawOpen(sftp, path, WRITE | CREAT | 0x10)
        sent = 0
        while partsStored(s3, bucket, key) < parts:
            rawWrite(sftp, handle, data[sent : sent + MiB], sent)
            sent += MiB
            assert sent < len(data)
        sftp.get_channel().get_transport().sock.close()
    waitParked(s3, bucket, key)


def test_winscpFilepart(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    WinSCP's resume, at packet level: LSTAT of the target and of
    C{name.filepart} (the bytes stored), OPEN C{WRITE|CREAT} (no TRUNC),
    WRITEs from that size, CLOSE answered OK, REMOVE of the old target,
    RENAME: the target is the whole file.
    """
    gateway.addUser("alice")
    source = makeFile(tmp_path, "report.csv", 4 * PART + 5)
    data = source.read_bytes()
    put = gateway.sftp("alice", [f"put {makeFile(tmp_path, 'old', 10)} report.csv"])
    assert put.returncode == 0, put.stderr
    cutUpload(gateway, s3, bucket, "report.csv.filepart", data, 2)
    with paramikoSFTP(gateway, "alice") as sftp:
        assert sftp.lstat("report.csv").st_size == 10
        size = sftp.lstat("report.csv.filepart").st_size
        assert size is not None and size % PART == 0 and size >= 2 * PART
        handle = rawOpen(sftp, "report.csv.filepart", WRITE | CREAT)
        rawWrite(sftp, handle, data[size:], size)
        sftp._request(CLOSE, handle)
        sftp._request(REMOVE, "report.csv")
        sftp._request(RENAME, "report.csv.filepart", "report.csv")
    assertDone(s3, bucket, "alice/report.csv", source)


def test_paramikoAppend(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    paramiko C{open(path, "ab")}: FSTAT gives the bytes stored, the writes
    continue from there, and CLOSE (sent at packet level) is answered OK.
    A wrong offset first is refused with the size to resume from, and the
    upload is kept; and while one session holds the upload, another is
    told it is busy.
    """
    gateway.addUser("alice")
    source = makeFile(tmp_path, "data.bin", 4 * PART + 77)
    data = source.read_bytes()
    cutUpload(gateway, s3, bucket, "data.bin", data, 2)
    with paramikoSFTP(gateway, "alice") as sftp:
        handle = rawOpen(sftp, "data.bin", WRITE | CREAT)
        with pytest.raises(OSError, match="resume from"):
            rawWrite(sftp, handle, b"x", 3)
        with pytest.raises(OSError):
            sftp._request(CLOSE, handle)
    waitParked(s3, bucket, "alice/data.bin")
    with paramikoSFTP(gateway, "alice") as sftp, paramikoSFTP(gateway, "alice") as other:
        f = sftp.open("data.bin", "ab")
        with pytest.raises(OSError, match="another session"):
            rawOpen(other, "data.bin", WRITE | CREAT)
        size = f.stat().st_size
        assert size is not None and size >= 2 * PART
        f.write(data[size:])
        f.flush()
        sftp._request(CLOSE, f.handle)
        f._closed = True
    assertDone(s3, bucket, "alice/data.bin", source)


def hostFingerprint(gateway: Gateway) -> str:
    """
    @return: the gateway's host key SHA-256 fingerprint, base64 without
        padding, as curl's C{--hostpubsha256} takes it.
    """
    from twisted.conch.ssh.keys import Key

    key = Key.fromFile(str(gateway.root / "host_key")).public()
    return base64.b64encode(hashlib.sha256(key.blob()).digest()).decode().rstrip("=")


def test_curlResume(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    C{curl -C -} (libssh2, as in Debian 12: STAT, then OPEN C{WRITE|APPEND})
    after an interrupted upload: it exits 0 and the object is the whole
    file.
    """
    key = gateway.addUser("curlr")
    source = makeFile(tmp_path, "c.bin", 4 * PART + 3)
    command = [
        "curl",
        "-sS",
        "--key",
        str(key),
        "-u",
        "curlr:",
        "--hostpubsha256",
        hostFingerprint(gateway),
        "-T",
        str(source),
        f"sftp://127.0.0.1:{gateway.port}/c.bin",
    ]
    client = subprocess.Popen(
        [*command, "--limit-rate", "3M"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        waitFor(lambda: partsStored(s3, bucket, "curlr/c.bin") >= 2, 60, 0.05)
    finally:
        client.kill()
        client.wait()
    waitParked(s3, bucket, "curlr/c.bin")
    result = subprocess.run([*command, "-C", "-"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assertStored(s3, bucket, "curlr/c.bin", source)


class Relay:
    """
    A TCP relay to the gateway that the test can cut: every connection
    through it is closed at once, as a dropped link would be.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """
        Drop every connection through the relay.
        """
        sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        """
        Stop accepting, and drop every connection.
        """
        self.listener.close()
        self.cut()


@pytest.fixture
def relayed(gateway: Gateway) -> Iterator[tuple[Gateway, Relay]]:
    """
    The test's gateway, and a relay to it.
    """
    relay = Relay(gateway.port)
    try:
        yield gateway, relay
    finally:
        relay.close()


def lftpCommand(gateway: Gateway, port: int, user: str, script: str) -> list[str]:
    """
    @return: an lftp command line running C{script} as C{user} through
        C{port}, retrying a lost connection after a second.
    """
    key = gateway.root / f"{user}_key"
    return [
        "lftp",
        "-c",
        "set net:reconnect-interval-base 1; set net:reconnect-interval-multiplier 1; "
        "set net:max-retries 20; set net:timeout 10; set net:limit-rate 3000000; "
        f"set sftp:connect-program 'ssh -a -x -i {key} {' '.join(SSH_OPTIONS)}'; "
        f"open -u {user}, sftp://127.0.0.1:{port}; {script}",
    ]


def test_lftpRetriesThroughCut(
    relayed: tuple[Gateway, Relay], bucket: str, s3: Any, tmp_path: Path
) -> None:
    """
    lftp C{put} whose connection is cut mid-upload (by the relay) reconnects
    by itself, asks the size (STAT: the bytes stored), and sends the rest
    with OPEN C{WRITE|CREAT}: it exits 0 and the object is the whole file.
    """
    gateway, relay = relayed
    gateway.addUser("alice")
    source = makeFile(tmp_path, "l.bin", 5 * PART + 11)
    client = subprocess.Popen(
        lftpCommand(gateway, relay.port, "alice", f"put {source}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    waitFor(lambda: partsStored(s3, bucket, "alice/l.bin") >= 2, 60, 0.05)
    relay.cut()
    output, _ = client.communicate(timeout=180)
    assert client.returncode == 0, output
    assert relay.accepted >= 2
    assertDone(s3, bucket, "alice/l.bin", source)


def test_lftpPutContinue(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    lftp C{put -c} after an upload killed mid-way continues it.
    """
    gateway.addUser("alice")
    source = makeFile(tmp_path, "p.bin", 4 * PART + 1)
    interruptedPut(gateway, s3, bucket, source)
    result = subprocess.run(
        lftpCommand(gateway, gateway.port, "alice", f"put -c {source}"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assertDone(s3, bucket, "alice/p.bin", source)


def test_ttlExpiry(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A parked upload older than C{--resume-ttl} is aborted by the sweep: no
    multipart upload and no lease are left, and the file is gone from
    listings.
    """
    gateway = startGateway(None, "--resume-ttl=2")
    gateway.addUser("alice")
    source = makeFile(tmp_path, "t.bin", 4 * PART)
    interruptedPut(gateway, s3, bucket, source)
    waitFor(lambda: multipartUploads(s3, bucket) == [] and leaseRecords(s3, bucket) == [], 30)
    listing = gateway.sftp("alice", ["ls -l"])
    assert "t.bin" not in listing.stdout


def test_resumeOffAborts(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    With C{--resume-ttl=0}, a killed client's upload is aborted as before,
    and C{reput} is refused (nothing stored to resume).
    """
    gateway = startGateway(None, "--resume-ttl=0")
    key = gateway.addUser("alice")
    source = makeFile(tmp_path, "o.bin", 4 * PART)
    client = slowPut(gateway, source)
    try:
        waitFor(lambda: partsStored(s3, bucket, "alice/o.bin") >= 1, 60, 0.05)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    waitFor(lambda: multipartUploads(s3, bucket) == [])
    waitNoLeases(s3, bucket)
    result = subprocess.run(
        [*sftpCommand(gateway.port, key), "-b", "-", "alice@127.0.0.1"],
        input=f"reput {source}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_ctrlCThenReput(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    OpenSSH C{put} interrupted with Ctrl-C sends CLOSE, so the first part
    of the file is stored as a complete object; C{reput} then appends the
    rest (server-side copies of the stored parts, then the client's data):
    C{sftp} exits 0 and the object is the whole file, with its SHA-256.
    """
    gateway.addUser("alice")
    source = makeFile(tmp_path, "cc.bin", 4 * PART + 321)
    client = slowPut(gateway, source)
    waitFor(lambda: partsStored(s3, bucket, "alice/cc.bin") >= 2, 60, 0.05)
    client.send_signal(signal.SIGINT)
    client.wait(timeout=60)
    stored = waitFor(
        lambda: s3.list_objects_v2(Bucket=bucket, Prefix="alice/cc.bin").get("Contents"), 30
    )
    size = stored[0]["Size"]
    assert 0 < size < source.stat().st_size
    assert objectBytes(s3, bucket, "alice/cc.bin") == source.read_bytes()[:size]
    result = gateway.sftp("alice", [f"reput {source}"])
    assert result.returncode == 0, result.stderr
    assertDone(s3, bucket, "alice/cc.bin", source)


def test_paramikoAppendToStored(gateway: Gateway, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    paramiko C{"ab"} on a stored file (FSTAT gives its size) appends to
    it; CLOSE, sent at packet level, is answered OK.
    """
    gateway.addUser("alice")
    first, rest = os.urandom(PART + 999), os.urandom(PART + 5)
    source = tmp_path / "ab.bin"
    source.write_bytes(first + rest)
    with paramikoSFTP(gateway, "alice") as sftp:
        with sftp.open("ab.bin", "wb") as f:
            f.write(first)
        f = sftp.open("ab.bin", "ab")
        assert f.stat().st_size == len(first)
        f.write(rest)
        f.flush()
        sftp._request(CLOSE, f.handle)
        f._closed = True
    assertDone(s3, bucket, "alice/ab.bin", source)


def test_rollingRestart(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    A server stopped with SIGTERM while an upload runs past
    C{--drain-timeout} parks it; after the restart (another server on the
    bucket), C{reput} sends only the rest.
    """
    first = startGateway(None, "--drain-timeout=1")
    first.addUser("alice")
    source = makeFile(tmp_path, "r.bin", 5 * PART + 3)
    client = slowPut(first, source)
    try:
        waitFor(lambda: partsStored(s3, bucket, "alice/r.bin") >= 2, 60, 0.05)
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    record = waitParked(s3, bucket, "alice/r.bin", 10)
    assert record.stored >= 2 * PART
    second = sameKeys(startGateway, first)
    result = second.sftp("alice", [f"reput {source}"])
    assert result.returncode == 0, result.stderr
    assertDone(s3, bucket, "alice/r.bin", source)
