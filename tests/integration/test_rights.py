"""
Per-user rights with real clients: drop boxes, read-only users, key options
(C{from=}, C{expiry-time=}), policy files (C{allow_from}, C{expires},
C{max_file_size}, C{home}) and a broken policy file, against one gateway
on a real S3; and the S3 object settings, with the requests recorded on
their way to S3.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.tools.seaweedfs import LocalS3

from .conftest import (
    SSH_OPTIONS,
    Gateway,
    MiB,
    assertCleanLog,
    asyncsshConnect,
    keys,
    multipartUploads,
    objectBytes,
    paramikoSFTP,
    rcloneEnvironment,
)
from .faultproxy import FaultProxy

#: A policy file per user; users without one have every right.
POLICIES = {
    "drop": 'access = "drop-box"\n',
    "reader": 'access = "read-only"\n',
    "inbox": 'permissions = ["list", "upload"]\n',
    "lapsed": "expires = 2020-01-01T00:00:00Z\n",
    "walled": 'allow_from = ["10.0.0.0/8", "2001:db8::/32"]\n',
    "capped": 'max_file_size = "1MiB"\n',
    "elsewhere": 'home = "inbound/partner/"\n',
    "broken": 'access = "drop-box\n',
}

#: Options put before the key of a user's C{.pub} line.
KEY_OPTIONS = {
    "fenced": 'from="10.9.9.9"',
    "local": 'restrict,from="127.0.0.0/8,!127.0.0.2",no-pty',
    "expired": 'expiry-time="20200101"',
    "current": 'expiry-time="29991231Z"',
}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, localS3: LocalS3) -> Iterator[Gateway]:
    """
    One gateway with a user of each kind; its log must stay free of
    tracebacks.
    """
    root = tmp_path_factory.mktemp("rights")
    bucket = "r-" + uuid.uuid4().hex[:20]
    localS3.createBucket(bucket)
    gateway = Gateway(root / "gw", bucket, localS3.endpointURL)
    for user in ["alice", "unknown", *POLICIES, *KEY_OPTIONS]:
        gateway.addUser(user)
    for user, options in KEY_OPTIONS.items():
        path = gateway.keysDir / f"{user}.pub"
        path.write_text(f"{options} {path.read_text()}")
    for user, policy in POLICIES.items():
        path = gateway.keysDir / f"{user}.toml"
        path.write_text(policy)
        path.chmod(0o644)
    # A key nobody listed: "unknown" logs in with it.
    (gateway.keysDir / "unknown.pub").unlink()
    s3 = localS3.client()
    s3.put_object(Bucket=bucket, Key="reader/report.csv", Body=b"a,b\n1,2\n")
    s3.put_object(Bucket=bucket, Key="drop/existing.txt", Body=b"old\n")
    try:
        yield gateway
    finally:
        assertCleanLog(gateway.stop())


def source(door: Gateway, tmp_path: Path, name: str, size: int) -> Path:
    """
    @return: a local file of C{size} random bytes.
    """
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def test_dropBoxOpenSSH(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    A drop box takes OpenSSH's C{put} and C{put -p} (its FSETSTAT of the
    time on its own handle); C{ls}, C{get} and an overwrite are refused
    with "Permission denied" (OpenSSH shows no message; a C{get} of a file
    it cannot C{stat} says "not found"), each audited with
    the right missing; C{ls} shows only the files this connection stored.
    """
    data = source(door, tmp_path, "report.bin", 3 * MiB)
    result = door.sftp("drop", [f"put {data} /a.bin", f"put -p {data} /b.bin"])
    assert result.returncode == 0, result.stderr
    for name in ("a.bin", "b.bin"):
        assert objectBytes(s3, door.bucket, f"drop/{name}") == data.read_bytes()
    mtime = s3.head_object(Bucket=door.bucket, Key="drop/b.bin")["Metadata"]["mtime"]
    assert int(mtime) == int(data.stat().st_mtime)
    result = door.sftp("drop", [f"put {data} /c.bin", "ls -l /"])
    assert result.returncode == 0, result.stderr
    assert "c.bin" in result.stdout and "existing.txt" not in result.stdout, result.stdout
    assert "a.bin" not in result.stdout
    for command, right in [
        (f"get /a.bin {tmp_path / 'back'}", "download"),
        (f"get /existing.txt {tmp_path / 'back'}", "list"),
        (f"put {data} /existing.txt", "overwrite"),
        (f"put {data} /a.bin", "overwrite"),
        ("rm /a.bin", "delete"),
        ("mkdir /sub", "mkdir"),
    ]:
        before = len(door.log.read_text())
        result = door.sftp("drop", [command])
        assert result.returncode != 0, command
        if not command.startswith("get"):
            assert "Permission denied" in result.stderr, (command, result.stderr)
        assert f"the '{right}' right is missing" in door.log.read_text()[before:], command
    assert objectBytes(s3, door.bucket, "drop/existing.txt") == b"old\n"
    assert not (tmp_path / "back").exists()
    assert multipartUploads(s3, door.bucket) == []
    log = door.log.read_text()
    assert "denied: drop the status of a file /existing.txt: the 'list' right is missing" in log
    assert "login success for drop from 127.0.0.1 with SHA256:" in log
    assert "(drop-box)" in log


def test_dropBoxRclone(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    rclone C{copy} into a drop box: rclone lists the target (only the
    connection's own files show), uploads each file, sets its time with
    SETSTAT and reads it back with STAT, which a drop box allows on a file
    of its own connection; C{--no-traverse} (a lookup per file instead of
    the listing) works too.
    """
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("x.txt", "y.txt"):
        (tree / name).write_bytes(os.urandom(100_000))
        os.utime(tree / name, (1_600_000_000, 1_600_000_000))
    env = rcloneEnvironment(tmp_path / "rclone.conf", door.port, "drop", door.root / "drop_key")
    for extra in ([], ["--no-traverse"]):
        for path in tree.iterdir():
            path.rename(tree / f"{len(extra)}-{path.name}")
        command = ["rclone", "--retries", "1", "copy", *extra, str(tree), "gw:"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        for path in tree.iterdir():
            assert objectBytes(s3, door.bucket, f"drop/{path.name}") == path.read_bytes()
            metadata = s3.head_object(Bucket=door.bucket, Key=f"drop/{path.name}")["Metadata"]
            assert int(float(metadata["mtime"])) == 1_600_000_000


def test_dropBoxLftpMirror(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    lftp C{mirror -R} into a drop box's home: the target's listing holds
    nothing another connection stored, so lftp uploads every file (it
    fails outright on a listing refused, MirrorJob::HandleListInfo); its
    exit status is 0.
    """
    tree = tmp_path / "mirror"
    tree.mkdir()
    for name in ("m1.txt", "m2.txt"):
        (tree / name).write_bytes(os.urandom(50_000))
    key = door.root / "drop_key"
    connect = (
        f"set sftp:connect-program 'ssh -a -x -i {key} {' '.join(SSH_OPTIONS)}'; "
        "set cmd:fail-exit yes; set net:max-retries 2; set net:reconnect-interval-base 1; "
        f"open -u drop, sftp://127.0.0.1:{door.port}; "
    )
    result = subprocess.run(
        ["lftp", "-c", connect + f"mirror -R {tree} /"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    for name in ("m1.txt", "m2.txt"):
        assert objectBytes(s3, door.bucket, f"drop/{name}") == (tree / name).read_bytes()


def test_dropBoxFilepart(door: Gateway, s3: Any) -> None:
    """
    WinSCP's way, through paramiko: upload C{name.filepart}, set its time,
    stat it, rename it to C{name}: each allowed on a file of the user's
    own (its metadata names its uploader), from another connection too;
    a rename onto an existing name, a download, and a stat or rename of a
    file someone else stored are refused.
    """
    with paramikoSFTP(door, "drop") as client:
        with client.open("/win.txt.filepart", "w") as f:
            f.write(b"winscp style\n")
        client.utime("/win.txt.filepart", (1_600_000_000, 1_600_000_000))
        assert client.stat("/win.txt.filepart").st_mtime == 1_600_000_000
        client.rename("/win.txt.filepart", "/win.txt")
        assert client.stat("/win.txt").st_size == 13
        with client.open("/again.filepart", "w") as f:
            f.write(b"x")
        with pytest.raises(PermissionError):
            client.posix_rename("/again.filepart", "/win.txt")
    assert objectBytes(s3, door.bucket, "drop/win.txt") == b"winscp style\n"
    assert keys(s3, door.bucket, "drop/win.txt.filepart") == []
    metadata = s3.head_object(Bucket=door.bucket, Key="drop/win.txt")["Metadata"]
    assert metadata["uploader"] == "drop" and metadata["mtime"] == "1600000000"
    with paramikoSFTP(door, "drop") as client:
        with pytest.raises(PermissionError, match="needs the 'download' right"):
            client.open("/win.txt", "r")
        assert client.stat("/win.txt").st_size == 13
        client.rename("/win.txt", "/win2.txt")
        with pytest.raises(PermissionError, match="needs the 'list' right"):
            client.stat("/existing.txt")
        with pytest.raises(PermissionError, match="needs the 'rename' right"):
            client.rename("/existing.txt", "/other.txt")
        with pytest.raises(FileNotFoundError):
            client.stat("/nothing-here.txt")


def test_inbox(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    An inbox (C{list} and C{upload}) lists what it, and anyone else,
    stored, but may not read it back or replace it.
    """
    data = source(door, tmp_path, "in.txt", 1000)
    s3.put_object(Bucket=door.bucket, Key="inbox/theirs.txt", Body=b"x")
    result = door.sftp("inbox", [f"put {data} /in.txt", "ls -l /"])
    assert result.returncode == 0, result.stderr
    assert "in.txt" in result.stdout and "theirs.txt" in result.stdout
    for command in (f"get /in.txt {tmp_path / 'back'}", f"put {data} /in.txt"):
        result = door.sftp("inbox", [command])
        assert result.returncode != 0 and "Permission denied" in result.stderr, command


def test_readOnly(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    A read-only user lists and downloads; every change is refused:
    upload, remove, rename, mkdir, rmdir, setting a time.
    """
    back = tmp_path / "report.csv"
    result = door.sftp("reader", ["ls -l /", f"get /report.csv {back}"])
    assert result.returncode == 0, result.stderr
    assert "report.csv" in result.stdout
    assert back.read_bytes() == b"a,b\n1,2\n"
    for command in (
        f"put {back} /new.csv",
        "rm /report.csv",
        "rename /report.csv /moved.csv",
        "mkdir /d",
        "rmdir /d",
    ):
        result = door.sftp("reader", [command])
        assert result.returncode != 0 and "Permission denied" in result.stderr, command
    with paramikoSFTP(door, "reader") as client:
        with pytest.raises(PermissionError):
            client.utime("/report.csv", (1, 1))
    assert keys(s3, door.bucket, "reader/") == ["reader/report.csv"]


def loginTrace(door: Gateway, user: str, key: str, bind: str = "127.0.0.1") -> Any:
    """
    Try to log in with C{ssh -v}, binding to C{bind}.

    @return: the finished process.
    """
    return subprocess.run(
        [
            "sftp",
            "-v",
            "-P",
            str(door.port),
            "-i",
            str(door.root / f"{key}_key"),
            *SSH_OPTIONS[:-2],
            "-o",
            f"BindAddress={bind}",
            f"{user}@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        input="bye\n",
    )


def clientView(result: Any) -> tuple[int, list[str]]:
    """
    @return: what a client saw of its login: the exit status and the
        authentication lines of C{ssh -v}, keys and names aside.
    """
    lines = [
        line.split(":")[1].strip()
        for line in result.stderr.splitlines()
        if "Authentications that can continue" in line or "Server accepts key" in line
    ]
    return result.returncode, lines


def test_keyOptionsAndExpiry(door: Gateway) -> None:
    """
    C{from=} and C{expiry-time=} hold, and a policy file's C{expires} and
    C{allow_from}: a refused key looks to the client exactly like an
    unknown one (no "Server accepts key", the same methods, the same exit
    status); only the log says why.  Keys within their options log in.
    """
    unknown = clientView(loginTrace(door, "alice", "unknown"))
    assert unknown[0] == 255 and unknown[1] and "Server accepts key" not in str(unknown)
    for user in ("fenced", "expired", "lapsed", "walled"):
        assert clientView(loginTrace(door, user, user)) == unknown, user
    for user in ("local", "current", "alice"):
        result = loginTrace(door, user, user)
        assert result.returncode == 0, (user, result.stderr)
    # 127.0.0.2 is excluded by "!127.0.0.2" in the local user's from=.
    assert clientView(loginTrace(door, "local", "local", bind="127.0.0.2")) == unknown
    log = door.log.read_text()
    assert "key refused: 127.0.0.1 does not match from='10.9.9.9'" in log
    assert "key refused: the key expired at" in log
    assert "policy refused: the user's access expired at 2020-01-01T00:00:00Z" in log
    assert "policy refused: 127.0.0.1 is not in allow_from" in log
    assert "key refused: 127.0.0.2 does not match from='127.0.0.0/8,!127.0.0.2'" in log


def test_brokenPolicyFile(door: Gateway, s3: Any) -> None:
    """
    A policy file that is not valid TOML refuses its user (fail closed),
    with one log line naming the file; the other users log in, and a
    repaired file takes effect at the next login.
    """
    assert door.sftp("broken", ["ls /"]).returncode == 255
    assert door.sftp("broken", ["ls /"]).returncode == 255
    assert door.sftp("alice", ["ls /"]).returncode == 0
    log = door.log.read_text()
    lines = [line for line in log.splitlines() if "Ignoring policy file" in line]
    assert len(lines) == 1 and "broken.toml: invalid TOML" in lines[0], lines
    path = door.keysDir / "broken.toml"
    unsafe = door.keysDir / "unsafe.toml"
    unsafe.write_text('access = "read-only"\n')
    unsafe.chmod(0o666)
    door.addUser("unsafe")
    assert door.sftp("unsafe", ["ls /"]).returncode == 255
    assert "unsafe.toml: writable by group or others" in door.log.read_text()
    path.write_text('access = "read-only"\n')
    assert door.sftp("broken", ["ls /"]).returncode == 0


def test_maxFileSize(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    With C{max_file_size}, the write that crosses it fails, the upload is
    aborted (nothing stored, no multipart upload left), and sftp exits
    non-zero; a file within it is stored.
    """
    small = source(door, tmp_path, "small", 1000)
    large = source(door, tmp_path, "large", 6 * MiB)
    assert door.sftp("capped", [f"put {small} /small"]).returncode == 0
    result = door.sftp("capped", [f"put {large} /large"])
    assert result.returncode != 0
    assert "Failure" in result.stderr, result.stderr
    assert "file too large: this user may store files of at most 1048576 bytes" in (
        door.log.read_text()
    )
    assert keys(s3, door.bucket, "capped/large") == []
    assert multipartUploads(s3, door.bucket) == []


def test_policyHome(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    A policy's C{home} replaces the template for its user.
    """
    data = source(door, tmp_path, "h.txt", 10)
    assert door.sftp("elsewhere", [f"put {data} /h.txt"]).returncode == 0
    assert objectBytes(s3, door.bucket, "inbound/partner/h.txt") == data.read_bytes()
    assert keys(s3, door.bucket, "elsewhere/") == []


@pytest.fixture
def recorded(
    tmp_path: Path, localS3: LocalS3, bucket: str, startGateway: Any
) -> Iterator[tuple[Gateway, FaultProxy]]:
    """
    A gateway with server-wide S3 settings, behind a proxy recording the
    requests; user C{acme} overrides the tags and the storage class, and
    C{kms} asks for SSE-KMS (which SeaweedFS, without a KMS, refuses).
    """
    proxy = FaultProxy(localS3.s3Port)
    gateway = startGateway(
        f"http://127.0.0.1:{proxy.port}",
        "--storage-class=STANDARD_IA",
        "--sse=AES256",
        "--object-tag=team=ops",
        "--object-tag=source=sftp gateway",
    )
    gateway.addUser("plain")
    gateway.addUser("acme")
    gateway.addUser("kms")
    (gateway.keysDir / "acme.toml").write_text(
        '[s3]\nstorage_class = "ONEZONE_IA"\ntags = { partner = "acme" }\n'
    )
    (gateway.keysDir / "kms.toml").write_text(
        '[s3]\nsse = "aws:kms"\nsse_kms_key_id = "arn:aws:kms:us-east-1:111122223333:key/k"\n'
    )
    try:
        yield gateway, proxy
    finally:
        proxy.stop()


def creating(proxy: FaultProxy) -> list[tuple[str, str, dict[str, str]]]:
    """
    @return: C{(what, path, headers)} of each request that creates an
        object: PutObject, CreateMultipartUpload, CopyObject.
    """
    found = []
    for method, path, headers in proxy.requests:
        if method == "POST" and path.endswith("?uploads"):
            found.append(("create", path, headers))
        elif method == "PUT" and "uploadId=" not in path and "x-amz-copy-source" in headers:
            found.append(("copy", path, headers))
        elif method == "PUT" and "uploadId=" not in path and "?" not in path:
            found.append(("put", path, headers))
    return found


def test_objectSettings(recorded: tuple[Gateway, FaultProxy], s3: Any, tmp_path: Path) -> None:
    """
    C{--storage-class}, C{--sse} and C{--object-tag} are sent with every
    call that creates an object (a small upload's PutObject, a large one's
    CreateMultipartUpload and the copy recording its SHA-256, a rename's
    and a time change's copies, a directory marker, a lease marker's
    encryption), tags only where a
    copy does not keep them; SeaweedFS stores the class, the encryption
    and the tags, and a renamed file keeps them.  A user's C{[s3]} table
    overrides them; SSE-KMS is sent as asked, and SeaweedFS, which has no
    KMS here, refuses it: the upload fails and leaves nothing.
    """
    gateway, proxy = recorded
    small = source(gateway, tmp_path, "s", 1000)
    large = source(gateway, tmp_path, "l", 11 * MiB)
    result = gateway.sftp(
        "plain",
        [f"put {small} /s", f"put {large} /l", "rename /s /t", "mkdir /d", f"put -p {small} /u"],
    )
    assert result.returncode == 0, result.stderr
    with paramikoSFTP(gateway, "plain") as client:
        client.utime("/t", (1_600_000_000, 1_600_000_000))  # a copy onto itself
    assert s3.head_object(Bucket=gateway.bucket, Key="plain/t")["Metadata"]["mtime"] == (
        "1600000000"
    )
    calls = creating(proxy)
    assert {what for what, _, _ in calls} == {"put", "create", "copy"}, calls
    for what, path, headers in calls:
        if ".s3sftp/" in path:  # a lease marker: encrypted, STANDARD, untagged
            assert headers.get("x-amz-server-side-encryption") == "AES256", headers
            assert "x-amz-storage-class" not in headers and "x-amz-tagging" not in headers
            continue
        if not path.endswith("/"):  # a directory's marker stays STANDARD
            assert headers.get("x-amz-storage-class") == "STANDARD_IA", (what, headers)
        assert headers.get("x-amz-server-side-encryption") == "AES256", (what, headers)
        if what != "copy":
            assert headers.get("x-amz-tagging") == "source=sftp+gateway&team=ops", headers
    bucket = gateway.bucket
    for key in ("plain/t", "plain/l", "plain/u"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass") == "STANDARD_IA", (key, head)
        assert head.get("ServerSideEncryption") == "AES256", (key, head)
        tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == {"team": "ops", "source": "sftp gateway"}
    assert "sha256" in s3.head_object(Bucket=bucket, Key="plain/l")["Metadata"]

    proxy.requests.clear()
    assert gateway.sftp("acme", [f"put {small} /a"]).returncode == 0
    head = s3.head_object(Bucket=bucket, Key="acme/a")
    assert head.get("StorageClass") == "ONEZONE_IA"
    assert head.get("ServerSideEncryption") == "AES256"
    tags = s3.get_object_tagging(Bucket=bucket, Key="acme/a")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"partner": "acme"}

    proxy.requests.clear()
    result = gateway.sftp("kms", [f"put {small} /k"])
    assert result.returncode != 0
    attempts = creating(proxy)  # botocore retries S3's 500
    assert attempts and {what for what, _, _ in attempts} == {"put"}
    for _, _, headers in attempts:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"].endswith(":key/k")
    assert keys(s3, bucket, "kms/") == []


def test_keysTool(door: Gateway, tmp_path: Path) -> None:
    """
    C{s3sftp-keys policy} then C{add --from --expires}: the user's first
    login is already narrowed (a read-only user from loopback), and the
    key line keeps its options when another key is added.
    """
    from twisted_s3sftp.tools.keyadmin import main

    door.addUser("tooled")
    public = door.keysDir / "tooled.pub"
    line = public.read_bytes()
    public.unlink()
    (tmp_path / "k.pub").write_bytes(line)
    base = ["--keys-dir", str(door.keysDir)]
    assert main([*base, "policy", "tooled", "--access", "read-only"]) == 0
    assert (
        main(
            [
                *base,
                "add",
                "tooled",
                str(tmp_path / "k.pub"),
                "--from",
                "127.0.0.1,::1",
                "--expires",
                "29991231Z",
            ]
        )
        == 0
    )
    assert public.read_text().startswith('from="127.0.0.1,::1",expiry-time="29991231Z" ')
    result = door.sftp("tooled", ["ls /", f"put {public} /x"])
    assert result.returncode != 0
    assert "denied: tooled uploading /x: the 'upload' right is missing" in door.log.read_text()
    assert door.sftp("tooled", ["ls /"]).returncode == 0


def test_dropBoxAsyncSSH(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    AsyncSSH, which checks every status (CLOSE's included): a drop box's
    C{put} succeeds; a listing holds only the connection's own files; an
    overwrite and a download are refused with C{PERMISSION_DENIED} and the
    message naming the right.
    """
    import asyncio

    import asyncssh

    data = source(door, tmp_path, "async.bin", 2 * MiB)

    async def run() -> None:
        async with asyncsshConnect(door, "drop") as connection:
            async with connection.start_sftp_client() as client:
                await client.put(str(data), "async.bin")
                names = set(await client.listdir(".")) - {".", ".."}
                assert names == {"async.bin"}, names
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="'overwrite' right"):
                    await client.put(str(data), "async.bin")
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="'download' right"):
                    await client.get("async.bin", str(tmp_path / "back"))

    asyncio.run(run())
    assert objectBytes(s3, door.bucket, "drop/async.bin") == data.read_bytes()
