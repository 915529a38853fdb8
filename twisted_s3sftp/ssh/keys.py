"""
Who may log in, and as which host: the keys directory and the host keys.

Users are files: C{<keysDir>/<username>.pub} in OpenSSH C{authorized_keys}
format (several keys, comments and blank lines allowed; the options
L{twisted_s3sftp.ssh.keyoptions} describes), and optionally
C{<username>.toml}, the user's policy (L{twisted_s3sftp.ssh.userpolicy}).
Both are read at every login through L{twisted_s3sftp.ssh.userfiles}, so
adding, changing or removing a file takes effect at the next login without
a restart.  A username that does not match
L{twisted_s3sftp.sftp.paths.USERNAME} is never looked up on disk.

L{KeysDirectoryChecker} admits a key only if it is in the user's file,
its options (C{from=}, C{expiry-time=}) and the user's policy
(C{allow_from}, C{expires}) allow the client's address and the time, and
the policy file, if any, is usable.  Any refusal looks to the client
exactly like an unknown key; only the log says why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from .keyoptions import KeyOptions, parseOptions, splitOptions
from .policy import MODERN, CryptoPolicy
from .userfiles import Unusable, UserFiles
from .userpolicy import MAX_POLICY_FILE, UserPolicy, parsePolicy

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


@frozen
class AuthorizedKey:
    """
    One usable line of a key file.

    @ivar key: the public key.
    @ivar options: what the line's options ask.
    """

    key: Key
    options: KeyOptions = KeyOptions()


def parseAuthorizedKeys(
    data: bytes, policy: CryptoPolicy = MODERN
) -> tuple[list[AuthorizedKey], list[str]]:
    """
    Parse a user's key file: OpenSSH C{authorized_keys} lines of the form
    C{[options] type base64 [comment]}; blank lines and C{#} comments are
    skipped.

    Each line stands alone: a bad line is reported and skipped, and the
    others still count.  A key is used only if its base64 decodes to
    exactly one key blob of the type the line names, with nothing missing
    or left over: a line caught half-written (a file being rewritten in
    place) cannot pass for a shorter key.  A line with an option this
    server cannot honour (L{twisted_s3sftp.ssh.keyoptions.parseOptions})
    is skipped: ignoring a restriction would widen access.  Keys the
    policy refuses (L{CryptoPolicy.userKeyProblem}) are skipped too.

    @param data: the file's bytes.
    @param policy: the crypto policy the keys are judged by.
    @return: the keys, and a reason for each line skipped.
    """
    found: list[AuthorizedKey] = []
    problems: list[str] = []
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        options = KeyOptions()
        if line.split()[0] not in KEY_TYPES:
            try:
                text = line.decode("ascii")
                optionsText, rest = splitOptions(text)
                line = rest.encode("ascii")
                if not line or line.split()[0] not in KEY_TYPES:
                    problems.append(f"line {number}: not a public key")
                    continue
                options = parseOptions(optionsText)
            except UnicodeDecodeError:
                problems.append(f"line {number}: not a public key")
                continue
            except ValueError as e:
                problems.append(f"line {number}: {e}")
                continue
        fields = line.split()
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
        found.append(AuthorizedKey(key, options))
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
    small and cached, so the cost is one C{stat} per login attempt.  A key
    file that cannot be trusted (L{twisted_s3sftp.ssh.userfiles}) gives no
    keys; each skipped line is logged once per version of the file.

    @ivar path: the keys directory.
    @ivar policy: the crypto policy keys are judged by.
    """

    path: FilePath[str]
    policy: CryptoPolicy = MODERN
    _files: UserFiles[list[AuthorizedKey]] = field(init=False, repr=False)

    @_files.default
    def _makeFiles(self) -> UserFiles[list[AuthorizedKey]]:
        return UserFiles(self.path, ".pub", self._parse, MAX_KEY_FILE, "key file")

    def _parse(self, data: bytes, path: str) -> list[AuthorizedKey]:
        found, problems = parseAuthorizedKeys(data, self.policy)
        for problem in problems:
            log.warn("Key file {path}, {problem}; the line is ignored", path=path, problem=problem)
        return found

    def entries(self, username: bytes | str) -> list[AuthorizedKey]:
        """
        @param username: the name the client logs in as.
        @return: the usable lines of C{<username>.pub}: none if the name is
            not a valid username, or the file does not exist or cannot be
            trusted.
        """
        found = self._files.read(username)
        return found if isinstance(found, list) else []

    def getAuthorizedKeys(self, username: bytes) -> list[Key]:
        """
        @param username: the name the client logs in as.
        @return: the usable keys in C{<username>.pub}, whatever their
            options.
        """
        return [entry.key for entry in self.entries(username)]


@frozen
class Login:
    """
    Who logged in, and under which policy: the avatar id the checker gives
    the realm.

    @ivar username: the login name.
    @ivar policy: the effective policy, every layer applied; the session
        keeps it.
    """

    username: str
    policy: UserPolicy


@implementer(ISSHPrivateKey)
@frozen
class ClientKey:
    """
    The public key credentials of a login attempt, with the address it
    comes from (the PROXY header's, behind a load balancer).

    @ivar peerHost: the client's address, or L{None} if unknown.
    """

    username: bytes
    algName: bytes
    blob: bytes
    sigData: bytes | None
    signature: bytes | None
    peerHost: str | None

    @classmethod
    def fromCredentials(cls, credentials: Any, peerHost: str | None) -> ClientKey:
        """
        @param credentials: an L{ISSHPrivateKey} provider.
        @return: C{credentials}, from C{peerHost}.
        """
        return cls(
            credentials.username,
            credentials.algName,
            credentials.blob,
            credentials.sigData,
            credentials.signature,
            peerHost,
        )


class KeysDirectoryChecker(SSHPublicKeyChecker):
    """
    L{SSHPublicKeyChecker}, but a key is only ever called acceptable after
    it was found in the user's file and every layer of policy admits the
    login; the avatar id is a L{Login}.

    The stock checker answers "key OK" to a signature-less query for any
    key at all (conch-pitfalls item 12); this one looks the key up, and
    checks its options and the user's policy, first.  Signature algorithms
    outside the crypto policy (C{ssh-rsa} with SHA-1, C{ssh-dss}) are
    refused before the key is looked up, so every refusal looks the same.
    The reason of a refusal is in its L{UnauthorizedLogin}, which the
    audit trail records, and nowhere the client sees.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(
        self,
        keydb: KeysDirectory,
        defaultPolicy: UserPolicy | None = None,
        statePrefix: str = ".s3sftp/uploads/",
        now: Callable[[], float] = time.time,
    ) -> None:
        """
        @param keydb: the keys directory, whose crypto policy also decides
            which signature algorithms are accepted.
        @param defaultPolicy: the server's C{--default-policy}: full rights
            if L{None}.
        @param statePrefix: the server's C{--state-prefix}, which no home
            may overlap.
        @param now: the clock expiry is judged by.
        """
        super().__init__(keydb)
        self.keys = keydb
        self.policy = keydb.policy
        self.defaultPolicy = defaultPolicy or UserPolicy()
        self.now = now
        self.policies: UserFiles[UserPolicy] = UserFiles(
            keydb.path,
            ".toml",
            lambda data, path: parsePolicy(data, statePrefix),
            MAX_POLICY_FILE,
            "policy file",
        )

    def requestAvatarId(self, credentials):  # type: ignore[no-untyped-def]
        if not self.policy.signatureAccepted(credentials.algName):
            # ssh-rsa (SHA-1) and ssh-dss: refused before any lookup, the
            # same way as an unknown key.
            return defer.fail(UnauthorizedLogin("signature algorithm refused"))
        d = defer.execute(Key.fromString, credentials.blob)
        d.addCallback(self._admit, credentials)
        return d

    def _admit(self, pubKey: Key, credentials: Any) -> Login:
        """
        @return: the login, if every check passes.
        @raise ValidPublicKey: for a query without a signature whose key
            would be admitted.
        @raise UnauthorizedLogin: with the reason, otherwise.
        """
        username = credentials.username.decode("ascii", "replace")
        entries = [e for e in self.keys.entries(credentials.username) if e.key == pubKey]
        if not entries:
            raise UnauthorizedLogin("key not authorized")
        host = getattr(credentials, "peerHost", None)
        now = self.now()
        # As sshd, every line with this key is tried: one whose options
        # admit the login is enough.
        refusals = [entry.options.refusal(host, now) for entry in entries]
        if None not in refusals:
            raise UnauthorizedLogin(f"key refused: {refusals[0]}")
        userPolicy = self.policies.read(username)
        if isinstance(userPolicy, Unusable):
            raise UnauthorizedLogin(f"the policy file is unusable: {userPolicy.reason}")
        policy = self.defaultPolicy
        if userPolicy is not None:
            policy = policy.narrowed(userPolicy)
        refusal = policy.refusal(host, now)
        if refusal is not None:
            raise UnauthorizedLogin(f"policy refused: {refusal}")
        if not credentials.signature:
            raise ValidPublicKey()
        self._verifyKey(pubKey, credentials)
        return Login(username, policy)


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
