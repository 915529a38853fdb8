"""
The interoperability matrix: each client a user would bring, driven as
that user would, against one gateway on a real S3.

Every client uploads the size ladder (empty, one byte, 32 KiB, a part
less one byte, a part, a part and one byte, 20 MiB), whose S3 objects are
checked by SHA-256; downloads it back and compares; then lists, renames,
removes, makes and removes a directory.  Each client is its own user, so
each works in its own home.

What each client showed about itself is in the test's docstring; the
README's client table summarises it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attrs import define
from twisted.conch.ssh.keys import Key

from twisted_s3sftp.tools.seaweedfs import LocalS3

from .conftest import (
    PART,
    SSH_OPTIONS,
    Gateway,
    MiB,
    assertCleanLog,
    keys,
    multipartUploads,
    objectBytes,
    paramikoSFTP,
    rcloneEnvironment,
)

#: The size ladder: name -> size.
LADDER = {
    "empty": 0,
    "one": 1,
    "small": 32 * 1024,
    "under": PART - 1,
    "part": PART,
    "over": PART + 1,
    "big": 20 * MiB,
}

#: The modification time given to every ladder file.
MTIME = 1_600_000_000


@define
class Matrix:
    """
    One gateway shared by the clients, and the ladder they upload.
    """

    gateway: Gateway
    bucket: str
    s3: Any
    root: Path
    ladder: Path
    hashes: dict[str, str]

    def user(self, name: str) -> Path:
        """
        Add user C{name}; return its private key.
        """
        return self.gateway.addUser(name)

    def scratch(self, name: str) -> Path:
        """
        @return: a new, empty local directory.
        """
        path = self.root / name
        path.mkdir()
        return path

    def hostFingerprint(self) -> str:
        """
        @return: the host key's SHA-256 fingerprint, base64 without padding.
        """
        key = Key.fromFile(str(self.gateway.root / "host_key")).public()
        return base64.b64encode(hashlib.sha256(key.blob()).digest()).decode().rstrip("=")

    def assertUploaded(
        self, prefix: str, mtime: bool = True, without: tuple[str, ...] = ()
    ) -> None:
        """
        Every ladder file but those named in C{without} is stored under
        C{prefix}, byte for byte, with its SHA-256 in its metadata and, if
        C{mtime}, its time; no multipart upload is left.
        """
        for name, digest in self.hashes.items():
            if name in without:
                continue
            key = prefix + name
            data = objectBytes(self.s3, self.bucket, key)
            assert hashlib.sha256(data).hexdigest() == digest, key
            metadata = self.s3.head_object(Bucket=self.bucket, Key=key)["Metadata"]
            assert metadata.get("sha256") == digest, (key, metadata)
            if mtime:
                assert int(float(metadata.get("mtime", 0))) == MTIME, (key, metadata)
        assert multipartUploads(self.s3, self.bucket) == []

    def assertDownloaded(self, directory: Path, mtime: bool = False) -> None:
        """
        Every ladder file is in C{directory}, byte for byte.
        """
        for name, digest in self.hashes.items():
            path = directory / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
            if mtime:
                assert int(path.stat().st_mtime) == MTIME, path

    def lastModified(self, prefix: str) -> dict[str, Any]:
        """
        @return: key -> S3 LastModified under C{prefix}.
        """
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"]: item["LastModified"] for item in listing.get("Contents", ())}


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """
    Run a client with a time limit; never wait for input.
    """
    kwargs.setdefault("timeout", 300)
    return subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs
    )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, localS3: LocalS3) -> Iterator[Matrix]:
    """
    One gateway (5 MiB parts) on one bucket for every client, and the
    ladder files, all dated L{MTIME}.
    """
    for tool in ("scp", "lftp", "rclone", "curl"):
        assert shutil.which(tool), f"{tool} is required (.ci/run installs it)"
    root = tmp_path_factory.mktemp("clients")
    bucket = "c-" + uuid.uuid4().hex[:20]
    localS3.createBucket(bucket)
    gateway = Gateway(root / "gw", bucket, localS3.endpointURL)
    ladder = root / "ladder"
    ladder.mkdir()
    hashes = {}
    for name, size in LADDER.items():
        data = os.urandom(size)
        path = ladder / name
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
        hashes[name] = hashlib.sha256(data).hexdigest()
    yield Matrix(gateway, bucket, localS3.client(), root, ladder, hashes)
    assertCleanLog(gateway.stop())


def test_opensshSftp(matrix: Matrix) -> None:
    """
    OpenSSH C{sftp -b}: C{put -p} of the ladder stores each file with its
    time (FSETSTAT before CLOSE); C{get -p} brings it back with that time;
    C{rename} (which OpenSSH sends as C{posix-rename}), C{rm}, C{mkdir},
    C{rmdir} and C{df} work.  C{reput} over a shorter remote file (OpenSSH
    opens it with APPEND and writes from its size) appends the rest.
    """
    matrix.user("openssh")
    down = matrix.scratch("openssh-down")
    result = matrix.gateway.sftp(
        "openssh",
        [
            "mkdir up",
            f"put -p {matrix.ladder}/* up/",
            "ls -l up",
            f"get -p up/* {down}/",
            "rename up/one up/renamed",
            "rm up/renamed",
            "mkdir made",
            "rmdir made",
            "df -h",
        ],
    )
    assert result.returncode == 0, result.stderr
    for name, size in LADDER.items():
        assert f" {size:>12} " in result.stdout or name == "one", (name, result.stdout)
    matrix.assertUploaded("openssh/up/", without=("one",))
    matrix.assertDownloaded(down, mtime=True)
    assert keys(matrix.s3, matrix.bucket, "openssh/up/one") == []
    assert keys(matrix.s3, matrix.bucket, "openssh/up/renamed") == []
    assert keys(matrix.s3, matrix.bucket, "openssh/made") == []

    partial = matrix.root / "partial"
    partial.write_bytes((matrix.ladder / "big").read_bytes()[:1000])
    assert matrix.gateway.sftp("openssh", [f"put {partial} partial"]).returncode == 0
    result = matrix.gateway.sftp("openssh", [f"reput {matrix.ladder}/big partial"])
    assert result.returncode == 0, result.stderr
    big = (matrix.ladder / "big").read_bytes()
    assert objectBytes(matrix.s3, matrix.bucket, "openssh/partial") == big


def test_opensshScp(matrix: Matrix) -> None:
    """
    OpenSSH C{scp -p} (SFTP mode, OpenSSH 9): uploads write "in place"
    (OPEN without TRUNC, then FSETSTAT of the size written), so sending
    the ladder a second time, over the existing files, must work too;
    downloads come back exact.
    """
    key = matrix.user("scp")
    command = ["scp", "-P", str(matrix.gateway.port), "-i", str(key), *SSH_OPTIONS]
    files = [str(matrix.ladder / name) for name in LADDER]
    for _ in range(2):
        result = run([*command, "-p", *files, "scp@127.0.0.1:"])
        assert result.returncode == 0, result.stderr
    matrix.assertUploaded("scp/")
    down = matrix.scratch("scp-down")
    result = run([*command, "-p", "scp@127.0.0.1:*", f"{down}/"])
    assert result.returncode == 0, result.stderr
    matrix.assertDownloaded(down, mtime=True)


def test_lftpMirror(matrix: Matrix) -> None:
    """
    lftp: C{mirror -R} of a tree creates its directories and uploads its
    files; C{mirror} brings the tree back identical; a second
    C{mirror -R} sends nothing, since the listing reports the times lftp
    set; C{mv}, C{rm}, C{mkdir} and C{rmdir} work.  lftp retries a failed
    connection 1,000 times, 15 s apart and more, by default: two quick
    retries make a broken gateway fail the test at once rather than at
    the time limit.
    """
    key = matrix.user("lftp")
    tree = matrix.scratch("lftp-tree")
    (tree / "ladder").mkdir()
    (tree / "deep" / "er").mkdir(parents=True)
    for name in LADDER:
        (tree / "ladder" / name).write_bytes((matrix.ladder / name).read_bytes())
        os.utime(tree / "ladder" / name, (MTIME, MTIME))
    (tree / "deep" / "er" / "note.txt").write_text("hello\n")
    connect = (
        f"set sftp:connect-program 'ssh -a -x -i {key} {' '.join(SSH_OPTIONS)}'; "
        "set cmd:fail-exit yes; set net:max-retries 2; set net:reconnect-interval-base 1; "
        f"open -u lftp, sftp://127.0.0.1:{matrix.gateway.port}; "
    )
    down = matrix.root / "lftp-down"
    result = run(["lftp", "-c", connect + f"mirror -R {tree} /tree; mirror /tree {down}"])
    assert result.returncode == 0, result.stderr
    matrix.assertUploaded("lftp/tree/ladder/")
    matrix.assertDownloaded(down / "ladder", mtime=True)
    assert (down / "deep" / "er" / "note.txt").read_text() == "hello\n"

    before = matrix.lastModified("lftp/")
    time.sleep(1.1)
    result = run(["lftp", "-c", connect + f"mirror -R {tree} /tree"])
    assert result.returncode == 0, result.stderr
    assert matrix.lastModified("lftp/") == before

    result = run(
        [
            "lftp",
            "-c",
            connect + "mv /tree/ladder/one /tree/renamed; rm /tree/renamed; "
            "mkdir /made; rmdir /made; cls -l /tree",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert keys(matrix.s3, matrix.bucket, "lftp/tree/renamed") == []
    assert keys(matrix.s3, matrix.bucket, "lftp/tree/ladder/one") == []
    assert keys(matrix.s3, matrix.bucket, "lftp/made") == []


def test_rclone(matrix: Matrix) -> None:
    """
    rclone with an sftp remote and its defaults (concurrent, padded
    writes; times set with SETSTAT after the upload): C{copy} up stores
    the ladder with its times; C{lsjson} reports them; a second C{copy}
    sends nothing; C{copy} down, C{moveto}, C{deletefile}, C{mkdir} and
    C{rmdir} work.  rclone runs C{md5sum} over SSH for hashes; the
    server refuses commands, so rclone reports hashes as unavailable.
    """
    key = matrix.user("rclone")
    env = rcloneEnvironment(matrix.root / "rclone.conf", matrix.gateway.port, "rclone", key)

    def rclone(*args: str) -> subprocess.CompletedProcess[str]:
        result = run(["rclone", "--retries", "1", *args], env=env)
        assert result.returncode == 0, result.stderr
        return result

    rclone("copy", str(matrix.ladder), "gw:up")
    matrix.assertUploaded("rclone/up/")
    listed = json.loads(rclone("lsjson", "gw:up").stdout)
    assert {entry["Name"]: entry["Size"] for entry in listed} == LADDER
    assert {entry["ModTime"][:19] for entry in listed} == {"2020-09-13T12:26:40"}
    before = matrix.lastModified("rclone/")
    time.sleep(1.1)
    rclone("copy", str(matrix.ladder), "gw:up")
    assert matrix.lastModified("rclone/") == before
    down = matrix.root / "rclone-down"
    rclone("copy", "gw:up", str(down))
    matrix.assertDownloaded(down, mtime=True)
    rclone("moveto", "gw:up/one", "gw:up/renamed")
    rclone("deletefile", "gw:up/renamed")
    rclone("mkdir", "gw:made")
    assert keys(matrix.s3, matrix.bucket, "rclone/made/") == ["rclone/made/"]
    rclone("rmdir", "gw:made")
    assert keys(matrix.s3, matrix.bucket, "rclone/made/") == []
    assert keys(matrix.s3, matrix.bucket, "rclone/up/one") == []
    assert keys(matrix.s3, matrix.bucket, "rclone/up/renamed") == []


def test_paramiko(matrix: Matrix) -> None:
    """
    paramiko: C{putfo} (pipelined writes, then a C{stat} to check the
    size), C{stat}, C{listdir_attr}, C{utime} (then reported by C{stat}
    and the listing), C{posix_rename} over an existing file, plain
    C{rename} over one refused (the target kept), C{"wx"} and C{"x"}
    (EXCL, the latter without WRITE) over an existing file refused as
    already existing and C{"x"} creating a new, empty one, C{"a"} appending
    (its CLOSE's status read at packet level), C{getfo}, C{mkdir}, C{rmdir}, C{remove}.

    paramiko ignores the status of CLOSE (C{SFTPFile.close} swallows
    C{IOError}), so a refused CLOSE is silent to its user: C{putfo} only
    notices through its size check.  Opening an existing file C{"r+"} and
    writing its first bytes is refused at CLOSE by the gateway (an S3
    object cannot keep its old end); paramiko says nothing, and the
    object must be left exactly as it was.
    """
    matrix.user("paramiko")
    down = matrix.scratch("paramiko-down")
    with paramikoSFTP(matrix.gateway, "paramiko") as sftp:
        sftp.get_channel().settimeout(120)
        sftp.mkdir("up")
        for name, size in LADDER.items():
            with (matrix.ladder / name).open("rb") as f:
                assert sftp.putfo(f, f"up/{name}").st_size == size
            sftp.utime(f"up/{name}", (MTIME, MTIME))
        matrix.assertUploaded("paramiko/up/")
        attrs = sftp.stat("up/big")
        assert (attrs.st_size, attrs.st_mode, attrs.st_mtime) == (20 * MiB, 0o100644, MTIME)
        assert sftp.stat("up").st_mode == 0o040755
        listed = {a.filename: (a.st_size, a.st_mtime) for a in sftp.listdir_attr("up")}
        assert listed == {name: (size, MTIME) for name, size in LADDER.items()}
        for name in LADDER:
            with (down / name).open("wb") as f:
                sftp.getfo(f"up/{name}", f)
        matrix.assertDownloaded(down)

        with pytest.raises(OSError, match="exists"):
            sftp.rename("up/one", "up/small")
        assert sftp.stat("up/small").st_size == LADDER["small"]
        sftp.posix_rename("up/one", "up/small")
        assert sftp.stat("up/small").st_size == 1
        with pytest.raises(OSError, match="already exists"):
            sftp.open("up/small", "wx")
        with pytest.raises(OSError, match="already exists"):
            sftp.open("up/small", "x")
        sftp.open("up/exclusive", "x").close()
        assert sftp.stat("up/exclusive").st_size == 0
        sftp.remove("up/exclusive")
        appended = sftp.open("up/small", "a")
        appended.write(b" appended")
        appended.flush()
        sftp._request(4, appended.handle)  # CLOSE, whose status paramiko ignores
        appended._closed = True
        one = (matrix.ladder / "one").read_bytes()
        assert objectBytes(matrix.s3, matrix.bucket, "paramiko/up/small") == one + b" appended"

        with sftp.open("up/under", "r+") as f:
            f.write(b"patched")
        under = objectBytes(matrix.s3, matrix.bucket, "paramiko/up/under")
        assert hashlib.sha256(under).hexdigest() == matrix.hashes["under"]
        sftp.remove("up/small")
        with pytest.raises(FileNotFoundError):
            sftp.remove("up/small")
        sftp.mkdir("made")
        with pytest.raises(OSError):
            sftp.rmdir("up")
        sftp.rmdir("made")
    assert keys(matrix.s3, matrix.bucket, "paramiko/made/") == []
    assert multipartUploads(matrix.s3, matrix.bucket) == []


def test_curl(matrix: Matrix) -> None:
    """
    curl (libssh2) with C{sftp://} URLs, the host key pinned by its
    SHA-256: C{-T} uploads, downloads, a directory listing, and
    C{-Q} commands (C{rename}, C{rm}, C{mkdir}, C{rmdir}).  curl sets no
    times, so objects carry only their SHA-256.
    """
    key = matrix.user("curl")
    base = f"sftp://127.0.0.1:{matrix.gateway.port}"
    command = [
        "curl",
        "-sS",
        "--key",
        str(key),
        "-u",
        "curl:",
        "--hostpubsha256",
        matrix.hostFingerprint(),
    ]
    for name in LADDER:
        result = run([*command, "-T", str(matrix.ladder / name), f"{base}/up/{name}"])
        assert result.returncode == 0, result.stderr
    matrix.assertUploaded("curl/up/", mtime=False)
    down = matrix.scratch("curl-down")
    for name in LADDER:
        result = run([*command, "-o", str(down / name), f"{base}/up/{name}"])
        assert result.returncode == 0, result.stderr
    matrix.assertDownloaded(down)
    listing = run([*command, f"{base}/up/"])
    assert listing.returncode == 0, listing.stderr
    assert sorted(line.split()[-1] for line in listing.stdout.splitlines()) == sorted(LADDER)
    result = run(
        [
            *command,
            "-Q",
            "rename /up/one /up/renamed",
            "-Q",
            "rm /up/renamed",
            "-Q",
            "mkdir /made",
            "-Q",
            "rmdir /made",
            f"{base}/",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert keys(matrix.s3, matrix.bucket, "curl/up/one") == []
    assert keys(matrix.s3, matrix.bucket, "curl/up/renamed") == []
    assert keys(matrix.s3, matrix.bucket, "curl/made/") == []
