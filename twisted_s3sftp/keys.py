"""
Who may log in, and as which host: the keys directory and the host keys.

Users are files: C{<keysDir>/<username>.pub} in OpenSSH C{authorized_keys}
format (several keys, comments and blank lines allowed).  The directory is
read at every login, with parsed files cached by modification time and
size, so adding or removing a file takes effect at the next login without a
restart.  A username that does not match
L{twisted_s3sftp.paths.USERNAME} is never looked up on disk.
"""

from __future__ import annotations

import os

from attrs import define, field
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.checkers import (
    IAuthorizedKeysDB,
    SSHPublicKeyChecker,
    readAuthorizedKeyFile,
)
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from .paths import isValidUsername

log = Logger()


@implementer(IAuthorizedKeysDB)
@define(eq=False)
class KeysDirectory:
    """
    The authorised keys of every user, one file per user.

    Conch calls L{getAuthorizedKeys} on the reactor thread; the files are
    small and cached, so the cost is one C{stat} per login attempt.

    @ivar path: the keys directory.
    """

    path: FilePath[str]
    _cache: dict[str, tuple[tuple[int, int], list[Key]]] = field(
        factory=dict, init=False, repr=False
    )

    def getAuthorizedKeys(self, username: bytes) -> list[Key]:
        """
        @param username: the name the client logs in as.
        @return: the keys in C{<username>.pub}, or none if the name is not
            a valid username or the file does not exist.
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
        stamp = (info.st_mtime_ns, info.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with keyFile.open("r") as f:
                found = list(readAuthorizedKeyFile(f))
        except OSError:
            return []
        self._cache[name] = (stamp, found)
        return found


class KeysDirectoryChecker(SSHPublicKeyChecker):
    """
    L{SSHPublicKeyChecker}, but a key is only ever called acceptable after
    it was found in the user's file.

    The stock checker answers "key OK" to a signature-less query for any
    key at all (conch-pitfalls item 12); this one looks the key up first.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def requestAvatarId(self, credentials):  # type: ignore[no-untyped-def]
        d = defer.execute(Key.fromString, credentials.blob)
        d.addCallback(self._checkKey, credentials)
        d.addCallback(self._requireSignature, credentials)
        d.addCallback(self._verifyKey, credentials)
        return d

    @staticmethod
    def _requireSignature(pubKey: Key, credentials: ISSHPrivateKey) -> Key:
        if not credentials.signature:
            raise ValidPublicKey()
        return pubKey


def ensurePrivateKey(path: FilePath[str]) -> None:
    """
    Create an ed25519 private key at C{path} (mode 0600, OpenSSH format)
    unless one exists: the default host key, and the demo's user key.

    @param path: where the private key lives.
    """
    if path.exists():
        return
    path.parent().makedirs(ignoreExistingDirectory=True)
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


def loadHostKeys(paths: list[FilePath[str]]) -> dict[bytes, Key]:
    """
    Load SSH host private keys.

    @param paths: private key files, in OpenSSH or PEM format.
    @return: key type (e.g. C{b"ssh-ed25519"}) to private key.
    @raise ValueError: with a one-line reason, for a file that is missing,
        unreadable, not a private key, or a second key of the same type.
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
        keyType = key.sshType()
        if keyType in found:
            raise ValueError(f"two host keys of type {keyType.decode()}")
        found[keyType] = key
    return found
