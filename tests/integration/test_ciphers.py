"""
The ciphers and MACs Twisted Conch lacks (L{twisted_s3sftp.ssh.ciphers})
and strict key exchange (L{twisted_s3sftp.ssh.packets}), against real
clients: OpenSSH with each AEAD cipher and each encrypt-then-MAC MAC
forced alone (an upload and a download checked by SHA-256, CLOSE's status
seen in C{sftp}'s exit status), a rekey in the middle of a transfer,
paramiko with AES-GCM and EtM, and AsyncSSH with ChaCha20-Poly1305 and
strict key exchange, PuTTY's C{psftp}, and OpenSSH configured by
ssh-audit's client hardening guide.

One gateway serves the module; its log must hold no traceback at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twisted_s3sftp.tools.seaweedfs import LocalS3

from .conftest import Gateway, MiB, asyncsshConnect, moduleGateway, objectBytes
from .test_openssh import makeFile

#: The AEAD ciphers, each forced alone.
AEAD = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]

#: The encrypt-then-MAC MACs, each forced alone with AES-CTR.
ETM = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, localS3: LocalS3) -> Iterator[Gateway]:
    """
    One gateway with a user C{alice}, in a bucket of its own.
    """
    with moduleGateway(tmp_path_factory.mktemp("ciphers"), localS3, "c") as gateway:
        yield gateway


def roundTrip(door: Gateway, s3: Any, tmp_path: Path, size: int, *options: str) -> str:
    """
    Upload a file of C{size} random bytes and download it back with
    C{options}; check both by SHA-256.

    @return: C{sftp}'s standard error (its debug lines).
    """
    source = makeFile(tmp_path, "source", size)
    name = f"{uuid.uuid4().hex}.bin"
    back = tmp_path / "back"
    # -v: the negotiated algorithms show in its standard error.
    result = door.sftp("alice", [f"put {source} {name}", f"get {name} {back}"], "-v", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    stored = objectBytes(s3, door.bucket, f"alice/{name}")
    assert hashlib.sha256(stored).hexdigest() == digest
    return result.stderr


@pytest.mark.parametrize("cipher", AEAD)
def test_aeadCipher(door: Gateway, s3: Any, tmp_path: Path, cipher: str) -> None:
    """
    With only an AEAD cipher offered (and MACs the server does not have,
    which an AEAD cipher does not need), OpenSSH negotiates it, and a
    multipart upload and its download arrive intact.
    """
    stderr = roundTrip(
        door, s3, tmp_path, 12 * MiB, "-c", cipher, "-o", "MACs=umac-128@openssh.com"
    )
    assert f"cipher: {cipher} MAC: <implicit>" in stderr, stderr[-3000:]


@pytest.mark.parametrize("mac", ETM)
def test_encryptThenMAC(door: Gateway, s3: Any, tmp_path: Path, mac: str) -> None:
    """
    With AES-CTR and only an encrypt-then-MAC MAC, OpenSSH negotiates it,
    and an upload and its download arrive intact.
    """
    stderr = roundTrip(door, s3, tmp_path, 6 * MiB, "-c", "aes128-ctr", "-o", f"MACs={mac}")
    assert f"cipher: aes128-ctr MAC: {mac}" in stderr, stderr[-3000:]


def test_strictKeyExchange(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    OpenSSH (9.6 and later, or a patched 9.2 such as Debian's) sees strict
    key exchange offered and uses it: with the sequence numbers restarted
    after NEWKEYS on both sides, or the first packet after it would fail
    its MAC.
    """
    stderr = roundTrip(door, s3, tmp_path, 1024, "-vvv")
    assert "will use strict KEX ordering" in stderr, stderr[-3000:]


@pytest.mark.parametrize(
    "cipher, mac",
    [(c, "hmac-sha2-256-etm@openssh.com") for c in AEAD]
    + [("aes128-ctr", "hmac-sha2-256-etm@openssh.com"), ("aes128-ctr", "hmac-sha2-256")],
)
def test_rekey(door: Gateway, s3: Any, tmp_path: Path, cipher: str, mac: str) -> None:
    """
    A client that rekeys every MiB (OpenSSH's C{RekeyLimit}) keeps
    uploading and downloading with every cipher: keys and sequence numbers
    change under way without a lost or rejected packet.
    """
    stderr = roundTrip(
        door, s3, tmp_path, 8 * MiB, "-c", cipher, "-o", f"MACs={mac}", "-o", "RekeyLimit=1M"
    )
    assert stderr.count("SSH2_MSG_NEWKEYS received") >= 3, stderr[-3000:]


@pytest.mark.parametrize(
    "cipher, mac",
    [
        ("aes256-gcm@openssh.com", "hmac-sha2-256"),
        ("aes128-gcm@openssh.com", "hmac-sha2-256"),
        ("aes256-ctr", "hmac-sha2-512-etm@openssh.com"),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ],
)
def test_paramiko(door: Gateway, cipher: str, mac: str) -> None:
    """
    paramiko, an independent implementation, with AES-GCM or EtM forced:
    an upload, its CLOSE answered (C{putfo} reads the size back with
    C{stat}), and a download.  (paramiko still wants a MAC in common with
    an AEAD cipher, unlike OpenSSH, hence the ordinary one beside it.)
    """
    import io

    import paramiko

    data = bytes(range(256)) * 4096
    transport = paramiko.Transport(("127.0.0.1", door.port))
    options = transport.get_security_options()
    options.ciphers = (cipher,)
    options.digests = (mac,)
    transport.connect(
        username="alice",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(door.root / "alice_key")),
    )
    try:
        assert transport.remote_cipher == cipher
        if cipher.endswith("-gcm@openssh.com"):
            assert transport.remote_mac in (mac, None, "")
        else:
            assert transport.remote_mac == mac
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        name = f"{uuid.uuid4().hex}.bin"
        client.putfo(io.BytesIO(data), name)
        back = io.BytesIO()
        client.getfo(name, back)
        assert back.getvalue() == data
        client.close()
    finally:
        transport.close()


def test_asyncsshChaCha(door: Gateway, tmp_path: Path) -> None:
    """
    AsyncSSH with only ChaCha20-Poly1305 (whose safety against Terrapin
    rests on strict key exchange, which AsyncSSH uses when offered)
    uploads and reads a file back.
    """
    source = tmp_path / "chacha.bin"
    source.write_bytes(bytes(range(256)) * 1024)

    async def upload() -> None:
        async with asyncsshConnect(
            door, "alice", encryption_algs=["chacha20-poly1305@openssh.com"]
        ) as connection:
            assert connection.get_extra_info("send_cipher") == "chacha20-poly1305@openssh.com"
            async with connection.start_sftp_client() as client:
                await client.put(str(source), "chacha.bin")
                await client.get("chacha.bin", str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()

    asyncio.run(upload())


#: The client settings of ssh-audit's hardening guides (here its Debian 12
#: guide, OpenSSH 9.2): only EtM MACs, which Conch alone cannot match.
HARDENED_CLIENT = [
    "-o",
    "Ciphers=chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr,aes192-ctr,"
    "aes128-gcm@openssh.com,aes128-ctr",
    "-o",
    "MACs=hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
    "-o",
    "KexAlgorithms=sntrup761x25519-sha512@openssh.com,curve25519-sha256,"
    "curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
    "diffie-hellman-group-exchange-sha256",
    "-o",
    "HostKeyAlgorithms=ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-256",
]


@pytest.mark.parametrize("cipher", [None, "aes256-ctr"])
def test_hardenedClient(door: Gateway, s3: Any, tmp_path: Path, cipher: str | None) -> None:
    """
    OpenSSH configured by ssh-audit's client hardening guide connects and
    uploads: with its own first choice (ChaCha20-Poly1305), and with AES-CTR,
    where one of its EtM MACs is used.
    """
    options = list(HARDENED_CLIENT)
    if cipher is not None:
        options[1] = f"Ciphers={cipher}"
    stderr = roundTrip(door, s3, tmp_path, 1024 * 1024, *options)
    expected = "MAC: hmac-sha2-512-etm@openssh.com" if cipher else "MAC: <implicit>"
    assert expected in stderr, stderr[-3000:]


def test_putty(door: Gateway, s3: Any, tmp_path: Path) -> None:
    """
    PuTTY's C{psftp} (Debian's C{putty-tools}: PuTTY 0.78), a client with
    its own SSH implementation, logs in with its converted key, checks the
    host key by fingerprint, uses strict key exchange, uploads and
    downloads; its exit status says every command of the batch succeeded.
    """
    key = tmp_path / "alice.ppk"
    subprocess.run(
        ["puttygen", str(door.root / "alice_key"), "-O", "private", "-o", str(key)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(door.root / "host_key")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()[1]
    source = makeFile(tmp_path, "putty.bin", 6 * MiB)
    name = f"{uuid.uuid4().hex}.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"put {source} {name}\nget {name} {tmp_path / 'back.bin'}\n")
    result = subprocess.run(
        [
            "psftp",
            "-batch",
            "-P",
            str(door.port),
            "-i",
            str(key),
            "-hostkey",
            fingerprint,
            "-b",
            str(batch),
            "-v",
            "alice@127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # PuTTY 0.78 picks AES-256-CTR with HMAC-SHA-256, and strict KEX.
    assert "Enabling strict key exchange semantics" in output, output[-3000:]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    stored = objectBytes(s3, door.bucket, f"alice/{name}")
    assert hashlib.sha256(stored).hexdigest() == digest
