"""
The operator's view of a real server: the JSON audit trail.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.keys import fingerprint
from twisted_s3sftp.seaweedfs import credentialsEnvironment

from .conftest import paramikoSFTP
from .test_hardening import wrongKey


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
            "127.0.0.1", port=gateway.port, username="olga", pkey=wrongKey(),
            allow_agent=False, look_for_keys=False,
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
        "olga", "/in/report.csv", bucket, "olga/in/report.csv",
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
    upload that finishes within C{--drain-timeout} complete intact, aborts
    one left open (no object, no multipart upload), and exits within the
    timeout plus a few seconds.
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
    assert keys(s3, bucket) == ["dora/done.bin"]
    stored = s3.get_object(Bucket=bucket, Key="dora/done.bin")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(first + rest).digest()
    assert multipartUploads(s3, bucket) == []
    log = gateway.log.read_text()
    assert "aborting 1 upload(s)" in log


def test_metricsAndHealth(startGateway: Any, tmp_path: Path) -> None:
    """
    With C{--metrics}, C{/metrics} reports the session, the upload, the
    bytes and the S3 calls it made; C{/healthz} answers 200, then 503 as
    soon as a shutdown begins, while the drain waits for an open upload.
    """
    import re
    import signal
    import time
    import urllib.error
    import urllib.request

    gateway = startGateway(
        None, "--metrics=tcp:0:interface=127.0.0.1", "--drain-timeout=3"
    )
    port = None
    deadline = time.monotonic() + 20
    while port is None and time.monotonic() < deadline:
        match = re.search(r"metrics listening on 127\.0\.0\.1:(\d+)", gateway.log.read_text())
        port = int(match.group(1)) if match else None
        time.sleep(0.05)
    assert port is not None

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    assert get("/healthz") == (200, "ok\n")
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
