"""
Tests for L{twisted_s3sftp.keys}: users are key files, read at each login.
"""

from __future__ import annotations

import os
import stat

from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.keys import (
    KeysDirectory,
    KeysDirectoryChecker,
    ensurePrivateKey,
    loadHostKeys,
)

from cryptography.hazmat.primitives.asymmetric import ed25519


def newKey() -> Key:
    """
    @return: a fresh ed25519 private key.
    """
    return Key(ed25519.Ed25519PrivateKey.generate())


def line(key: Key, comment: str = "") -> bytes:
    """
    @return: an C{authorized_keys} line for C{key}.
    """
    return key.public().toString("openssh") + (b" " + comment.encode() if comment else b"")


class KeysDirectoryTests(SynchronousTestCase):
    """
    L{KeysDirectory} reads C{<username>.pub} files at every lookup.
    """

    def setUp(self) -> None:
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()
        self.db = KeysDirectory(self.dir)
        self.key1, self.key2 = newKey(), newKey()

    def write(self, name: str, content: bytes) -> None:
        """
        Write a key file, making sure its modification time changes.
        """
        path = self.dir.preauthChild(name)
        existed = path.exists()
        before = os.stat(path.path).st_mtime_ns if existed else 0
        path.setContent(content)
        os.utime(path.path, ns=(before + 10**9, before + 10**9))

    def test_severalKeysAndComments(self) -> None:
        """
        Every key in the file counts; comments and blank lines are
        ignored.
        """
        self.write(
            "alice.pub",
            b"# alice's keys\n\n" + line(self.key1, "laptop") + b"\n"
            + line(self.key2, "ci") + b"\n",
        )
        self.assertEqual(
            self.db.getAuthorizedKeys(b"alice"), [self.key1.public(), self.key2.public()]
        )

    def test_hotReload(self) -> None:
        """
        A new file is seen at the next lookup, a changed one is re-read,
        and a removed one refuses the user, all without a restart.
        """
        self.assertEqual(self.db.getAuthorizedKeys(b"bob"), [])
        self.write("bob.pub", line(self.key1) + b"\n")
        self.assertEqual(self.db.getAuthorizedKeys(b"bob"), [self.key1.public()])
        self.write("bob.pub", line(self.key2) + b"\n")
        self.assertEqual(self.db.getAuthorizedKeys(b"bob"), [self.key2.public()])
        self.dir.child("bob.pub").remove()
        self.assertEqual(self.db.getAuthorizedKeys(b"bob"), [])

    def test_invalidUsernames(self) -> None:
        """
        A name outside C{[a-z_][a-z0-9_.-]{0,31}} is never a user, even if
        a file of that name exists; path tricks never reach the disk.
        """
        self.write("Alice.pub", line(self.key1))
        self.dir.child("sub").makedirs()
        self.write("sub/x.pub", line(self.key1))
        for name in [b"Alice", b"sub/x", b"../x", b"", b"\xff", b"a" * 33]:
            self.assertEqual(self.db.getAuthorizedKeys(name), [], name)


class CheckerTests(SynchronousTestCase):
    """
    L{KeysDirectoryChecker} only calls a key acceptable after finding it.
    """

    def setUp(self) -> None:
        directory = FilePath(self.mktemp())
        directory.makedirs()
        self.key = newKey()
        directory.child("alice.pub").setContent(line(self.key))
        self.checker = KeysDirectoryChecker(KeysDirectory(directory))

    def credentials(self, username: bytes, key: Key, signed: bool) -> SSHPrivateKey:
        """
        @return: SSH public key credentials, signed over some data or not.
        """
        data = b"session data"
        signature = key.sign(data) if signed else None
        return SSHPrivateKey(username, b"ssh-ed25519", key.public().blob(), data, signature)

    def test_unknownKeyQuery(self) -> None:
        """
        An unsigned query for a key that is not in the file is refused,
        not answered "key OK".
        """
        d = self.checker.requestAvatarId(self.credentials(b"alice", newKey(), False))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_knownKeyQuery(self) -> None:
        """
        An unsigned query for a listed key gets "key OK".
        """
        d = self.checker.requestAvatarId(self.credentials(b"alice", self.key, False))
        self.failureResultOf(d, ValidPublicKey)

    def test_signedLogin(self) -> None:
        """
        A correctly signed login with a listed key succeeds; the same key
        for another user does not.
        """
        d = self.checker.requestAvatarId(self.credentials(b"alice", self.key, True))
        self.assertEqual(self.successResultOf(d), b"alice")
        d = self.checker.requestAvatarId(self.credentials(b"bob", self.key, True))
        self.failureResultOf(d, UnauthorizedLogin)


class HostKeyTests(SynchronousTestCase):
    """
    Host keys are created once, private, and loaded with clear errors.
    """

    def test_createdPrivate(self) -> None:
        """
        L{ensurePrivateKey} writes an ed25519 key with mode 0600 and leaves an
        existing one alone.
        """
        path = FilePath(self.mktemp()).child("ssh_host_ed25519_key")
        ensurePrivateKey(path)
        self.assertEqual(stat.S_IMODE(os.stat(path.path).st_mode), 0o600)
        content = path.getContent()
        ensurePrivateKey(path)
        self.assertEqual(path.getContent(), content)
        self.assertEqual(list(loadHostKeys([path])), [b"ssh-ed25519"])

    def test_errors(self) -> None:
        """
        Missing files, public keys, garbage and duplicate types are
        refused with a one-line reason.
        """
        missing = FilePath(self.mktemp())
        e = self.assertRaises(ValueError, loadHostKeys, [missing])
        self.assertIn("cannot read", str(e))
        garbage = FilePath(self.mktemp())
        garbage.setContent(b"not a key")
        self.assertRaises(ValueError, loadHostKeys, [garbage])
        public = FilePath(self.mktemp())
        public.setContent(line(newKey()))
        e = self.assertRaises(ValueError, loadHostKeys, [public])
        self.assertIn("public key", str(e))
        one = FilePath(self.mktemp())
        ensurePrivateKey(one)
        two = FilePath(self.mktemp())
        ensurePrivateKey(two)
        e = self.assertRaises(ValueError, loadHostKeys, [one, two])
        self.assertIn("two host keys", str(e))
