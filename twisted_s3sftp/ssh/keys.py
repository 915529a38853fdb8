"""
Who may log in, and as which host: the keys directory and the host keys.

Users are files: C{<keysDir>/<username>.pub} in OpenSSH C{authorized_keys}
format (several keys, comments and blank lines allowed; no options).  The directory is
read at every login, with parsed files cached by modification time and
size, so adding or removing a file takes effect at the next login without a
restart.  A username that does not match
L{twisted_s3sftp.sftp.paths.USERNAME} is never looked up on disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct

from attrs import define, field
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.credentials import ISSHPrivateKey, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from ..sftp.paths import isValidUsername
from .policy import MODERN, CryptoPolicy

log = Logger()


#: Key type names a line of a key file may start with.
KEY_TYPES = frozenset(
    (
        b"ssh-ed25519",
        b"ssh-rsa",
        b"ssh-dss",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
        b"sk-ssh-ed25519@openssh.com",
        b"sk-ecdsa-sha2-nistp256@openssh.com",
    )
)

#: The largest key file read; a larger one is ignored.
MAX_KEY_FILE = 1024 * 1024


def parseAuthorizedKeys(data: bytes, policy: CryptoPolicy = MODERN) -> tuple[list[Key], list[str]]:
    """
    Parse a user's key file: OpenSSH C{authorized_keys} lines of the form
    C{type base64 [comment]}; blank lines and C{#} comments are skipped.

    Each line stands alone: a bad line is reported and skipped, and the
    others still count.  A key is used only if its base64 decodes to
    exactly one key blob of the type the line names, with nothing missing
    or left over: a line caught half-written (a file being rewritten in
    place) cannot pass for a shorter key.  Lines with options
    (C{from=}, C{command=}...) are refused: ignoring a restriction would
    widen access.  Keys the policy refuses (L{CryptoPolicy.userKeyProblem})
    are skipped too.

    @param data: the file's bytes.
    @param policy: the crypto policy the keys are judged by.
    @return: the keys, and a reason for each line skipped.
    """
    found: list[Key] = []
    problems: list[str] = []
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        fields = line.split()
        if fields[0] not in KEY_TYPES:
            if any(field in KEY_TYPES for field in fields[1:]):
                problems.append(f"line {number}: key options are not supported")
            else:
                problems.append(f"line {number}: not a public key")
            continue
        try:
            blob = base64.b64decode(fields[1], validate=True)
            key = Key.fromString(blob, type="blob")
        except (IndexError, ValueError, binascii.Error, BadKeyError, struct.error):
            problems.append(f"line {number}: damaged key")
            continue
        if key.blob() != blob or key.sshType() != fields[0]:
            problems.append(f"line {number}: damaged key")
            continue
        problem = policy.userKeyProblem(key.type(), key.size())
        if problem is not None:
            problems.append(f"line {number}: {problem}")
            continue
        found.append(key)
    return found, problems


def fingerprint(key: Key) -> str:
    """
    @return: C{key}'s SHA-256 fingerprint as OpenSSH prints it
        (C{SHA256:} and unpadded base64).
    """
    return blobFingerprint(key.public().blob())


def blobFingerprint(blob: bytes) -> str:
    """
    @param blob: a public key blob, as SSH sends it.
    @return: its SHA-256 fingerprint as OpenSSH prints it.
    """
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@implementer(IAuthorizedKeysDB)
@define(eq=False)
class KeysDirectory:
    """
    The authorised keys of every user, one file per user.

    Conch calls L{getAuthorizedKeys} on the reactor thread; the files are
    small and cached, so the cost is one C{stat} per login attempt.

    A key file is ignored, with a log line saying why, if it is writable
    by group or others, is not a regular file, is larger than
    L{MAX_KEY_FILE}, or is a symbolic link leading outside the keys
    directory (OpenSSH's C{StrictModes} in spirit).  Each version of a
    file is judged and logged once.

    @ivar path: the keys directory.
    @ivar policy: the crypto policy keys are judged by.
    """

    path: FilePath[str]
    policy: CryptoPolicy = MODERN
    _cache: dict[str, tuple[tuple[int, ...], list[Key]]] = field(
        factory=dict, init=False, repr=False
    )

    def getAuthorizedKeys(self, username: bytes) -> list[Key]:
        """
        @param username: the name the client logs in as.
        @return: the usable keys in C{<username>.pub}, or none if the name
            is not a valid username or the file does not exist.
        """
        try:
            name = username.decode("ascii")
        except UnicodeDecodeError:
            return []
        if not isValidUsername(name):
            return []
        keyFile = self.path.child(name + ".pub")
        try:
            info = os.stat(keyFile.path)
        except OSError:
            self._cache.pop(name, None)
            return []
        stamp = _stamp(info)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        problem = self._fileProblem(keyFile, info)
        if problem is not None:
            log.warn("Ignoring key file {path}: {problem}", path=keyFile.path, problem=problem)
            self._cache[name] = (stamp, [])
            return []
        try:
            with open(keyFile.path, "rb") as f:
                data = f.read(MAX_KEY_FILE + 1)
                after = _stamp(os.fstat(f.fileno()))
        except OSError as e:
            log.warn("Cannot read key file {path}: {error}", path=keyFile.path, error=e.strerror)
            return []
        found, problems = parseAuthorizedKeys(data, self.policy)
        for problem in problems:
            log.warn(
                "Key file {path}, {problem}; the line is ignored",
                path=keyFile.path,
                problem=problem,
            )
        if after == stamp:
            # Cached only if the file did not change while it was read.
            self._cache[name] = (stamp, found)
        return found

    def _fileProblem(self, keyFile: FilePath[str], info: os.stat_result) -> str | None:
        """
        @return: why C{keyFile} must not be trusted, or L{None}.
        """
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return "writable by group or others (chmod go-w)"
        if info.st_size > MAX_KEY_FILE:
            return f"larger than {MAX_KEY_FILE} bytes"
        home = os.path.realpath(self.path.path)
        target = os.path.realpath(keyFile.path)
        if os.path.dirname(target) != home:
            return "a symbolic link leading outside the keys directory"
        return None


def _stamp(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_mode)


class KeysDirectoryChecker(SSHPublicKeyChecker):
    """
    L{SSHPublicKeyChecker}, but a key is only ever called acceptable after
    it was found in the user's file.

    The stock checker answers "key OK" to a signature-less query for any
    key at all (conch-pitfalls item 12); this one looks the key up first.
    Signature algorithms outside the policy (C{ssh-rsa} with SHA-1,
    C{ssh-dss}) are refused before the key is looked up, so every refusal
    looks the same.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, keydb: KeysDirectory) -> None:
        """
        @param keydb: the keys directory, whose crypto policy also decides
            which signature algorithms are accepted.
        """
        super().__init__(keydb)
        self.policy = keydb.policy

    def requestAvatarId(self, credentials):  # type: ignore[no-untyped-def]
        if not self.policy.signatureAccepted(credentials.algName):
            # ssh-rsa (SHA-1) and ssh-dss: refused before any lookup, the
            # same way as an unknown key.
            return defer.fail(UnauthorizedLogin("signature algorithm refused"))
        d = defer.execute(Key.fromString, credentials.blob)
        d.addCallback(self._checkKey, credentials)
        d.addCallback(self._requireSignature, credentials)
        d.addCallback(self._verifyKey, credentials)
        return d

    @staticmethod
    def _requireSignature(pubKey: Key, credentials: SSHPrivateKey) -> Key:
        if not credentials.signature:
            raise ValidPublicKey()
        return pubKey


def ensurePrivateKey(path: FilePath[str], kind: str = "ed25519") -> None:
    """
    Create a private key at C{path} (mode 0600, OpenSSH format) unless one
    exists: the default host key, and the demo's user key.

    @param path: where the private key lives.
    @param kind: C{"ed25519"}, or C{"ecdsa"} for an ECDSA key on NIST
        P-384 (the default host key under C{--crypto-policy fips}).
    """
    if path.exists():
        return
    path.parent().makedirs(ignoreExistingDirectory=True)
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ecdsa":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(path.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    log.info("Created private key {path}", path=path.path)


def loadHostKeys(paths: list[FilePath[str]], policy: CryptoPolicy = MODERN) -> dict[bytes, Key]:
    """
    Load SSH host private keys.

    @param paths: private key files, in OpenSSH or PEM format.
    @param policy: the crypto policy they must fit.
    @return: key type (e.g. C{b"ssh-ed25519"}) to private key.
    @raise ValueError: with a one-line reason, for a file that is missing,
        unreadable, not a private key, refused by the crypto policy
        (L{CryptoPolicy.hostKeyProblem}: under C{modern}, ed25519 or RSA
        of 3072 bits or more), or a
        second key of the same type.
    """
    found: dict[bytes, Key] = {}
    for path in paths:
        try:
            key = Key.fromFile(path.path)
        except OSError as e:
            raise ValueError(f"cannot read host key {path.path}: {e.strerror}") from None
        except (BadKeyError, ValueError) as e:
            raise ValueError(f"{path.path} is not a usable host key ({e})") from None
        if key.isPublic():
            raise ValueError(f"{path.path} is a public key; give the private key")
        problem = policy.hostKeyProblem(key.type(), key.size())
        if problem is not None:
            raise ValueError(f"{path.path}: {problem}")
        keyType = key.sshType()
        if keyType in found:
            raise ValueError(f"two host keys of type {keyType.decode()}")
        found[keyType] = key
    return found
