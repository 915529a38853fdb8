"""
The named crypto policies (C{--crypto-policy}) against real clients: each
running server held to its ssh-audit policy file; OpenSSH configured as a
FIPS-mode system (NIST curves, AES, HMAC-SHA-2, ECDSA keys) against C{fips};
an old client that knows only SHA-1 against C{legacy}; and each policy
refusing what it excludes.

One gateway per policy serves the module; their logs must hold no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from twisted_s3sftp.tools.seaweedfs import LocalS3

from .conftest import BATCH_OPTIONS, Gateway, assertCleanLog

ETC = Path(__file__).parents[2] / "etc"

#: What a RHEL/Fedora client in FIPS mode (or under DISA STIG settings)
#: offers: no X25519, no ChaCha20, no ed25519.
FIPS_CLIENT = [
    "-o",
    "KexAlgorithms=ecdh-sha2-nistp256,ecdh-sha2-nistp384,diffie-hellman-group16-sha512",
    "-o",
    "Ciphers=aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes128-ctr",
    "-o",
    "MACs=hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256",
    "-o",
    "HostKeyAlgorithms=ecdsa-sha2-nistp384,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256",
    "-o",
    "PubkeyAcceptedAlgorithms=ecdsa-sha2-nistp384,ecdsa-sha2-nistp256,rsa-sha2-512",
]

#: What a client that knows nothing newer than SHA-1 offers.
SHA1_CLIENT = [
    "-o",
    "KexAlgorithms=diffie-hellman-group14-sha1",
    "-o",
    "Ciphers=aes128-ctr",
    "-o",
    "MACs=hmac-sha1",
    "-o",
    "HostKeyAlgorithms=ssh-rsa",
    "-o",
    "PubkeyAcceptedAlgorithms=ssh-rsa",
]


def makeKey(path: Path, kind: str, bits: int) -> Path:
    """
    Make an OpenSSH key pair with C{ssh-keygen}.

    @return: the private key's path (the public key is beside it).
    """
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-b", str(bits), "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, localS3: LocalS3) -> Iterator[dict]:  # type: ignore[type-arg]
    """
    One gateway per policy, each with the host keys its policy can offer
    (ed25519, ECDSA P-384, RSA 3072, as allowed) and three users: C{ed}
    (ed25519 key), C{ec} (ECDSA P-384) and C{rsa} (RSA 3072).
    """
    root = tmp_path_factory.mktemp("policies")
    hostKeys = {
        "ed25519": makeKey(root / "host_ed25519", "ed25519", 256),
        "ecdsa": makeKey(root / "host_ecdsa", "ecdsa", 384),
        "rsa": makeKey(root / "host_rsa", "rsa", 3072),
    }
    userKeys = {
        "ed": makeKey(root / "ed_key", "ed25519", 256),
        "ec": makeKey(root / "ec_key", "ecdsa", 384),
        "rsa": makeKey(root / "rsa_key", "rsa", 3072),
    }
    which = {
        "modern": ["ed25519", "rsa"],
        "fips": ["ecdsa", "rsa"],
        "compat": ["ed25519", "ecdsa", "rsa"],
        "legacy": ["ed25519", "ecdsa", "rsa"],
    }
    started: dict[str, Gateway] = {}
    try:
        for policy, kinds in which.items():
            bucket = "p-" + uuid.uuid4().hex[:20]
            localS3.createBucket(bucket)
            keysDir = root / f"keys-{policy}"
            keysDir.mkdir()
            for user, key in userKeys.items():
                target = keysDir / f"{user}.pub"
                target.write_text(key.with_suffix(".pub").read_text())
                target.chmod(0o644)
            extra = [f"--host-key={hostKeys[kind]}" for kind in kinds]
            gateway = Gateway(
                root / f"gw-{policy}",
                bucket,
                localS3.endpointURL,
                f"--crypto-policy={policy}",
                *extra[1:],
                keysDir=keysDir,
                hostKey=hostKeys[kinds[0]],
            )
            started[policy] = gateway
        yield {"gateways": started, "users": userKeys}
    finally:
        for gateway in started.values():
            assertCleanLog(gateway.stop())


def ssh(gateway: Gateway, user: str, key: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """
    Log in with OpenSSH's C{ssh} and run the C{sftp} subsystem with no
    input: log in, open the session, end it.
    """
    return subprocess.run(
        [
            "ssh",
            "-v",
            "-p",
            str(gateway.port),
            "-i",
            str(key),
            *BATCH_OPTIONS,
            "-o",
            "ConnectTimeout=20",
            *options,
            f"{user}@127.0.0.1",
            "-s",
            "sftp",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("policy", ["modern", "fips", "compat", "legacy"])
def test_sshAuditPolicy(gateways: dict, policy: str) -> None:  # type: ignore[type-arg]
    """
    Each running server passes its ssh-audit policy file (exact lists,
    strict key exchange, no compression).
    """
    gateway = gateways["gateways"][policy]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssh_audit",
            "--no-colors",
            "-P",
            str(ETC / f"ssh-audit-{policy}.txt"),
            "-p",
            str(gateway.port),
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout


def test_fipsClient(gateways: dict) -> None:  # type: ignore[type-arg]
    """
    A FIPS-mode client with an ECDSA key logs in under C{fips}: an ECDH
    exchange on a NIST curve, an ECDSA host key, AES-GCM.  Under C{modern}
    the same client finds no key exchange in common.
    """
    key = gateways["users"]["ec"]
    fips = ssh(gateways["gateways"]["fips"], "ec", key, *FIPS_CLIENT)
    assert fips.returncode == 0, fips.stderr[-3000:]
    assert "kex: algorithm: ecdh-sha2-nistp256" in fips.stderr
    assert "kex: host key algorithm: ecdsa-sha2-nistp384" in fips.stderr
    assert "cipher: aes256-gcm@openssh.com MAC: <implicit>" in fips.stderr
    modern = ssh(gateways["gateways"]["modern"], "ec", key, *FIPS_CLIENT)
    assert modern.returncode != 0
    assert "no matching key exchange method" in modern.stderr, modern.stderr[-3000:]


def test_fipsRefusesEd25519(gateways: dict) -> None:  # type: ignore[type-arg]
    """
    Under C{fips}, an ed25519 user key is not accepted, and a client that
    offers only X25519 or ChaCha20 finds nothing in common.
    """
    gateway = gateways["gateways"]["fips"]
    users = gateways["users"]
    refused = ssh(gateway, "ed", users["ed"])
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr, refused.stderr[-3000:]
    for option in ("KexAlgorithms=curve25519-sha256", "Ciphers=chacha20-poly1305@openssh.com"):
        result = ssh(gateway, "ec", users["ec"], "-o", option)
        assert result.returncode != 0
        assert "no matching" in result.stderr, result.stderr[-3000:]


def test_compatClient(gateways: dict) -> None:  # type: ignore[type-arg]
    """
    Under C{compat}, a client without X25519 or ed25519 (as Java 8 or JSch
    0.1.55) logs in with an ECDH exchange and the ECDSA host key.
    """
    result = ssh(
        gateways["gateways"]["compat"],
        "ec",
        gateways["users"]["ec"],
        "-o",
        "KexAlgorithms=ecdh-sha2-nistp256",
        "-o",
        "HostKeyAlgorithms=ecdsa-sha2-nistp384",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kex: host key algorithm: ecdsa-sha2-nistp384" in result.stderr


def test_legacyClient(gateways: dict) -> None:  # type: ignore[type-arg]
    """
    Under C{legacy}, a client that knows only SHA-1 (the group 14 exchange,
    C{hmac-sha1}, C{ssh-rsa} host and user signatures) logs in; no other
    policy lets it.  The server warned about it at start.
    """
    key = gateways["users"]["rsa"]
    legacy = gateways["gateways"]["legacy"]
    result = ssh(legacy, "rsa", key, *SHA1_CLIENT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kex: algorithm: diffie-hellman-group14-sha1" in result.stderr
    assert "--crypto-policy legacy offers SHA-1" in legacy.log.read_text()
    for policy in ("modern", "fips", "compat"):
        refused = ssh(gateways["gateways"][policy], "rsa", key, *SHA1_CLIENT)
        assert refused.returncode != 0, policy


#: Debian's JSch 0.1.55 (package libjsch-java).
JSCH = Path("/usr/share/java/jsch.jar")


@pytest.fixture(scope="module")
def jsch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The JSch client of C{tests/integration/java}, compiled.

    @return: the class path to run it with.
    """
    assert JSCH.exists(), "JSch is required (.ci/run installs libjsch-java)"
    out = tmp_path_factory.mktemp("jsch")
    source = Path(__file__).parent / "java" / "JSchTransfer.java"
    subprocess.run(
        ["javac", "-cp", str(JSCH), "-d", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def runJSch(
    classes: Path, gateway: Gateway, user: str, key: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """
    Upload and download a file with JSch 0.1.55, whose key reader wants the
    old PEM format.
    """
    pem = tmp_path / f"{user}.pem"
    pem.write_bytes(key.read_bytes())
    pem.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-m", "PEM", "-N", "", "-P", "", "-f", str(pem)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    source = tmp_path / "jsch.bin"
    source.write_bytes(bytes(range(256)) * 8192)
    return subprocess.run(
        [
            "java",
            "-cp",
            f"{JSCH}:{classes}",
            "JSchTransfer",
            "127.0.0.1",
            str(gateway.port),
            user,
            str(pem),
            str(source),
            "jsch.bin",
            str(tmp_path / "back.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_jsch(gateways: dict, jsch: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """
    JSch 0.1.55, still inside many Java file-transfer products (no
    curve25519, no ed25519 host keys, SHA-1 RSA signatures): refused under
    C{modern}; uploads and downloads with an ECDSA user key under C{compat};
    with an RSA user key and an RSA host key only under C{legacy}.
    """
    users = gateways["users"]
    servers = gateways["gateways"]
    refused = runJSch(jsch, servers["modern"], "ec", users["ec"], tmp_path)
    assert refused.returncode != 0
    assert "Algorithm negotiation fail" in refused.stderr, refused.stderr[-3000:]
    compat = runJSch(jsch, servers["compat"], "ec", users["ec"], tmp_path)
    assert compat.returncode == 0, compat.stderr[-3000:]
    assert "kex: client->server aes128-ctr hmac-sha2-256" in compat.stderr, compat.stderr[-3000:]
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "jsch.bin").read_bytes()
    (tmp_path / "back.bin").unlink()
    legacy = runJSch(jsch, servers["legacy"], "rsa", users["rsa"], tmp_path)
    assert legacy.returncode == 0, legacy.stderr[-3000:]
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "jsch.bin").read_bytes()
    refusedRSA = runJSch(jsch, servers["compat"], "rsa", users["rsa"], tmp_path)
    assert refusedRSA.returncode != 0, refusedRSA.stderr[-3000:]


@pytest.mark.parametrize(
    "policy, kex",
    [
        ("fips", "diffie-hellman-group16-sha512"),
        ("fips", "diffie-hellman-group18-sha512"),
        ("fips", "diffie-hellman-group14-sha256"),
        ("compat", "diffie-hellman-group14-sha256"),
        ("compat", "diffie-hellman-group-exchange-sha256"),
    ],
)
def test_finiteFieldExchange(gateways: dict, policy: str, kex: str) -> None:  # type: ignore[type-arg]
    """
    The finite-field exchanges Conch lacks (RFC 3526's groups with SHA-2)
    and group exchange on the same groups work alone, under strict key
    exchange, where the policy has them; C{modern} has none of them.
    """
    key = gateways["users"]["ec"]
    result = ssh(gateways["gateways"][policy], "ec", key, "-o", f"KexAlgorithms={kex}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"kex: algorithm: {kex}" in result.stderr
    refused = ssh(gateways["gateways"]["modern"], "ec", key, "-o", f"KexAlgorithms={kex}")
    assert refused.returncode != 0


def _clientAlgorithms(kind: str) -> list[str]:
    from .test_hardening import clientAlgorithms

    return clientAlgorithms(kind)


def _excludedUnder() -> list[tuple[str, str, str]]:
    """
    @return: (policy, option, algorithm) for every algorithm this machine's
        OpenSSH client has and a non-default policy excludes.
    """
    from twisted_s3sftp.ssh.policy import POLICIES

    cases = []
    for name in ("fips", "compat", "legacy"):
        policy = POLICIES[name]
        for option, kind, allowed in (
            ("KexAlgorithms", "kex", policy.keyExchanges),
            ("Ciphers", "cipher", policy.ciphers),
            ("MACs", "mac", policy.macs),
        ):
            names = {a.decode() for a in allowed}
            cases += [(name, option, a) for a in _clientAlgorithms(kind) if a not in names]
    return cases


@pytest.mark.parametrize("policy, option, algorithm", _excludedUnder())
def test_excludedUnderPolicy(gateways: dict, policy: str, option: str, algorithm: str) -> None:  # type: ignore[type-arg]
    """
    Under C{fips}, C{compat} and C{legacy}, a client offering only an
    algorithm the policy excludes cannot negotiate (a MAC is offered with
    AES-CTR, so that it counts).
    """
    extra = ["-o", "Ciphers=aes128-ctr"] if option == "MACs" else []
    result = ssh(
        gateways["gateways"][policy],
        "ec",
        gateways["users"]["ec"],
        "-o",
        f"{option}={algorithm}",
        *extra,
    )
    assert result.returncode != 0
    assert "no matching" in result.stderr, result.stderr[-3000:]
