"""
The operator's view of a real server: the JSON audit trail.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.ssh.keys import fingerprint
from twisted_s3sftp.tools.seaweedfs import credentialsEnvironment

from .conftest import paramikoSFTP
from .test_hardening import wrongKey
from .test_openssh import waitFor


def test_jsonAuditTrail(startGateway: Any, bucket: str, tmp_path: Path) -> None:
    """
    With C{--log-format json} every line of the log is a JSON object, and
    a session leaves one audit event per login (failed and successful, with
    the key's fingerprint and source), upload (with size, parts, SHA-256,
    ETag and duration), download, rename, remove, mkdir and rmdir.  No
    line holds the S3 secret key or any file content.
    """
    import paramiko
    from twisted.conch.ssh.keys import Key

    gateway = startGateway(None, "--log-format=json")
    gateway.addUser("olga")
    marker = os.urandom(16).hex().encode()
    content = marker * 1000
    source = tmp_path / "report.csv"
    source.write_bytes(content)

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            "127.0.0.1",
            port=gateway.port,
            username="olga",
            pkey=wrongKey(),
            allow_agent=False,
            look_for_keys=False,
        )
    client.close()
    with paramikoSFTP(gateway, "olga") as sftp:
        sftp.mkdir("in")
        sftp.put(str(source), "in/report.csv")
        sftp.get("in/report.csv", str(tmp_path / "back.csv"))
        sftp.rename("in/report.csv", "in/done.csv")
        sftp.remove("in/done.csv")
        sftp.rmdir("in")
    log = gateway.stop()

    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert records and all({"time", "level", "namespace", "message"} <= set(r) for r in records)
    events = [r for r in records if "audit" in r]
    kinds = [e["audit"] for e in events]
    for kind in ("login", "upload", "download", "rename", "remove", "mkdir", "rmdir"):
        assert kind in kinds, kinds
    logins = [e for e in events if e["audit"] == "login"]
    key = Key.fromFile(str(gateway.root / "olga_key"))
    success = [e for e in logins if e["outcome"] == "success"]
    assert [(e["user"], e["source"], e["fingerprint"]) for e in success] == [
        ("olga", "127.0.0.1", fingerprint(key))
    ]
    assert any(e["outcome"] == "failure" and e["reason"] for e in logins)
    (upload,) = [e for e in events if e["audit"] == "upload"]
    assert upload["outcome"] == "stored"
    assert (upload["user"], upload["path"], upload["bucket"], upload["key"]) == (
        "olga",
        "/in/report.csv",
        bucket,
        "olga/in/report.csv",
    )
    assert (upload["bytes"], upload["parts"]) == (len(content), 1)
    assert upload["sha256"] == hashlib.sha256(content).hexdigest()
    assert upload["etag"].startswith('"') and upload["seconds"] >= 0
    (download,) = [e for e in events if e["audit"] == "download"]
    assert download["bytes"] == len(content)
    secret = credentialsEnvironment()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in log
    assert marker.decode() not in log


def test_gracefulDrain(startGateway: Any, bucket: str, s3: Any) -> None:
    """
    On SIGTERM the server stops accepting connections at once, lets an
    upload that finishes within C{--drain-timeout} complete intact, parks
    one left open that stored a part (no object; its multipart upload and
    a parked lease kept, for its client to resume on another server), and
    exits within the timeout plus a few seconds.
    """
    import signal
    import socket
    import time

    from .conftest import keys, multipartUploads

    gateway = startGateway(None, "--drain-timeout=4")
    gateway.addUser("dora")
    first = os.urandom(6 * 1024 * 1024)
    rest = os.urandom(1024 * 1024)
    with paramikoSFTP(gateway, "dora") as finishing, paramikoSFTP(gateway, "dora") as stuck:
        # Not pipelined: paramiko loses track of pipelined WRITE replies
        # that another request on the same session reads first.
        done = finishing.open("done.bin", "wb")
        done.write(first)
        left = stuck.open("stuck.bin", "wb")
        left.write(first)
        start = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()
        done.write(rest)
        done.close()
        assert finishing.stat("done.bin").st_size == len(first) + len(rest)
        gateway.process.wait(timeout=30)
        elapsed = time.monotonic() - start
    assert elapsed < 4 + 5, elapsed
    assert keys(s3, bucket, "dora/") == ["dora/done.bin"]
    stored = s3.get_object(Bucket=bucket, Key="dora/done.bin")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(first + rest).digest()
    assert multipartUploads(s3, bucket) == ["dora/stuck.bin"]
    log = gateway.log.read_text()
    assert "parking or aborting 1 upload(s)" in log
    assert "upload parked" in log


def test_drainAnswersClose(startGateway: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """
    OpenSSH C{sftp put}s in flight when the server gets SIGTERM (three at
    once from one address: a partner's batch) finish: each CLOSE is
    answered before its connection is closed, so every C{sftp} exits 0 (it
    reports a failed or unanswered CLOSE), and every object is intact.  A
    C{get} in flight finishes too, intact.  The connections then get an
    SSH disconnect and the server exits.
    """
    import signal
    import time

    from .conftest import slowSftp

    gateway = startGateway(None, "--drain-timeout=30")
    key = gateway.addUser("dora")
    # Stored before the uploads' clients look their targets up: a file
    # another writer stores in a directory this server listed is seen only
    # after --dir-cache-ttl (README, Directory cache).  Larger than the
    # uploads, so that it is still being read when they are done, which is
    # when the drain turns to the downloads.
    download = os.urandom(20 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="dora/down.bin", Body=download)
    sources, clients = {}, []
    for number in range(3):
        name = f"big{number}.bin"
        sources[name] = tmp_path / name
        sources[name].write_bytes(os.urandom(12 * 1024 * 1024))
        batch = tmp_path / f"batch{number}"
        batch.write_text(f"put {sources[name]} {name}\n")
        # About 5 MB/s each, so the uploads are still running at the signal.
        clients.append(
            slowSftp(
                gateway, "dora", key, batch, 40000, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    batch = tmp_path / "batch-get"
    batch.write_text(f"get down.bin {tmp_path / 'down.bin'}\n")
    clients.append(
        slowSftp(gateway, "dora", key, batch, 40000, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )
    time.sleep(1.5)
    assert all(client.poll() is None for client in clients), "a transfer ended before the signal"
    gateway.process.send_signal(signal.SIGTERM)
    for client in clients:
        _, stderr = client.communicate(timeout=60)
        assert client.returncode == 0, stderr + gateway.log.read_text()[-3000:]
    for name, source in sources.items():
        stored = s3.get_object(Bucket=bucket, Key=f"dora/{name}")["Body"].read()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert (tmp_path / "down.bin").read_bytes() == download
    gateway.process.wait(timeout=30)
    log = gateway.log.read_text()
    assert log.count("upload stored") == 3
    assert "waiting up to" in log and "download(s) or listing(s)" in log
    assert log.rindex("upload stored") < log.rindex("no upload under way")


def test_metricsAndHealth(startGateway: Any, tmp_path: Path) -> None:
    """
    With C{--metrics}, C{/metrics} reports the session, the upload, the
    bytes and the S3 calls it made; C{/healthz} answers 200 once S3 has
    answered its first probe, then 503 as soon as a shutdown begins, while
    the drain waits for an open upload.
    """
    import signal
    import time
    import urllib.error
    import urllib.request

    gateway = startGateway(None, "--metrics=tcp:0:interface=127.0.0.1", "--drain-timeout=3")
    port = gateway.metricsPort()

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    # 503 "S3 not checked yet" until the first probe of S3 is answered.
    waitFor(lambda: get("/healthz") == (200, "ok\n"), 30, 0.1)
    gateway.addUser("mia")
    data = os.urandom(100_000)
    (tmp_path / "m.bin").write_bytes(data)
    with paramikoSFTP(gateway, "mia") as sftp:
        sftp.put(str(tmp_path / "m.bin"), "m.bin")
        status, text = get("/metrics")
        assert status == 200
        values = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("s3sftp_")
        }
        assert values["s3sftp_sessions"] == 1
        assert values['s3sftp_logins_total{outcome="success"}'] == 1
        assert values["s3sftp_uploads_started_total"] == 1
        assert values['s3sftp_uploads_total{outcome="stored"}'] == 1
        assert values["s3sftp_received_bytes_total"] == len(data)
        assert values['s3sftp_s3_requests_total{operation="PutObject",outcome="ok"}'] >= 1
        assert values["s3sftp_buffer_limit_bytes"] == 1024 * 1024 * 1024
        held = sftp.open("held.bin", "wb")
        held.write(b"x" * 1000)
        sftp.stat(".")
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert get("/healthz")[0] == 503
        gateway.process.wait(timeout=30)


def test_twoServersOneBucket(startGateway: Any, tmp_path: Path) -> None:
    """
    Two server processes with the same host key and keys directory serve
    the same users from one bucket: a directory made through one is
    listed through the other, a file uploaded through one downloads
    through the other, and both present the same host key.
    """
    keysDir = tmp_path / "shared-keys"
    hostKey = tmp_path / "shared-host-key"
    one = startGateway(None, keysDir=keysDir, hostKey=hostKey)
    two = startGateway(None, keysDir=keysDir, hostKey=hostKey)
    key = one.addUser("sam")
    (two.root / "sam_key").write_bytes(key.read_bytes())
    data = os.urandom(300_000)
    (tmp_path / "up.bin").write_bytes(data)
    hostKeys = set()
    with paramikoSFTP(one, "sam") as first, paramikoSFTP(two, "sam") as second:
        first.mkdir("shared")
        assert second.listdir("/") == ["shared"]
        first.put(str(tmp_path / "up.bin"), "shared/up.bin")
        second.get("shared/up.bin", str(tmp_path / "down.bin"))
        for sftp in (first, second):
            hostKeys.add(sftp.get_channel().get_transport().get_remote_server_key().get_base64())
    assert (tmp_path / "down.bin").read_bytes() == data
    assert len(hostKeys) == 1


def test_proxyProtocol(startGateway: Any, tmp_path: Path) -> None:
    """
    Behind a load balancer speaking the PROXY protocol (C{--listen
    haproxy:tcp:...}), the server logs the client's address from the
    header, and a connection without the header is closed.
    """
    import socket
    import threading

    gateway = startGateway(None, listen="haproxy:tcp:0:interface=127.0.0.1")
    gateway.addUser("pia")
    balancer = socket.socket()
    balancer.bind(("127.0.0.1", 0))
    balancer.listen(4)
    port = balancer.getsockname()[1]

    def relay() -> None:
        client, _ = balancer.accept()
        upstream = socket.create_connection(("127.0.0.1", gateway.port))
        upstream.sendall(f"PROXY TCP4 198.51.100.7 127.0.0.1 40000 {port}\r\n".encode())

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    threading.Thread(target=relay, daemon=True).start()
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="pia",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(gateway.root / "pia_key")),
        allow_agent=False,
        look_for_keys=False,
    )
    sftp = client.open_sftp()
    assert sftp.listdir("/") == []
    client.close()
    balancer.close()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as direct:
        direct.sendall(b"SSH-2.0-no-proxy-header\r\n")
        received = b""
        while chunk := direct.recv(65536):
            received += chunk
        assert received.startswith(b"SSH-2.0-") or received == b""
    log = gateway.stop()
    assert "login success for pia from 198.51.100.7" in log


def test_orphanSweep(startGateway: Any, localS3: Any, bucket: str, s3: Any) -> None:
    """
    A server killed with SIGKILL in the middle of a multipart upload leaves
    it, with its lease; another server on the bucket aborts it once the
    lease is older than C{--orphan-age} (with resume off there; with it on,
    a resumable upload waits for C{--resume-ttl}: C{test_resume.py}), and
    leaves a multipart upload it did not start alone.
    """
    import signal
    import time

    from .conftest import multipartUploads

    foreign = s3.create_multipart_upload(Bucket=bucket, Key="other-tool/x")["UploadId"]
    crashed = startGateway(None, "--orphan-age=3")
    crashed.addUser("kim")
    with paramikoSFTP(crashed, "kim") as sftp:
        f = sftp.open("big.bin", "wb")
        f.write(os.urandom(6 * 1024 * 1024))
        sftp.stat(".")
        deadline = time.monotonic() + 20
        while "kim/big.bin" not in multipartUploads(s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.1)
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(timeout=10)
    assert sorted(multipartUploads(s3, bucket)) == ["kim/big.bin", "other-tool/x"]
    leases = s3.list_objects_v2(Bucket=bucket, Prefix=".s3sftp/uploads/").get("Contents", [])
    assert len(leases) == 1
    startGateway(None, "--orphan-age=3", "--resume-ttl=0")

    def stateObjects() -> int:
        return int(s3.list_objects_v2(Bucket=bucket, Prefix=".s3sftp/").get("KeyCount", 0))

    # The sweep deletes the lease after aborting its upload: wait for both.
    deadline = time.monotonic() + 30
    while (
        "kim/big.bin" in multipartUploads(s3, bucket) or stateObjects()
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert multipartUploads(s3, bucket) == ["other-tool/x"]
    assert stateObjects() == 0
    s3.abort_multipart_upload(Bucket=bucket, Key="other-tool/x", UploadId=foreign)
