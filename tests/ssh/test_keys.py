"""
Tests for L{twisted_s3sftp.ssh.keys}: users are key files, read at each login.
"""

from __future__ import annotations

import os
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.keys import (
    KeysDirectory,
    KeysDirectoryChecker,
    Login,
    ensurePrivateKey,
    loadHostKeys,
    parseAuthorizedKeys,
)
from twisted_s3sftp.ssh.userpolicy import UserPolicy


def newKey() -> Key:
    """
    @return: a fresh ed25519 private key.
    """
    return Key(ed25519.Ed25519PrivateKey.generate())


def rsaKey(bits: int) -> Key:
    """
    @return: a fresh RSA private key of C{bits} bits.
    """
    return Key(rsa.generate_private_key(65537, bits))


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
        os.chmod(path.path, 0o644)
        os.utime(path.path, ns=(before + 10**9, before + 10**9))

    def test_severalKeysAndComments(self) -> None:
        """
        Every key in the file counts; comments and blank lines are
        ignored.
        """
        self.write(
            "alice.pub",
            b"# alice's keys\n\n"
            + line(self.key1, "laptop")
            + b"\n"
            + line(self.key2, "ci")
            + b"\n",
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

    def test_badLinesStandAlone(self) -> None:
        """
        A line that does not parse (garbage, a damaged key, an option the
        server cannot honour, a key the policy refuses) is skipped and
        reported; the other lines still count, CRLF line ends and a line
        with a C{from=} option included.
        """
        self.write(
            "carol.pub",
            b"garbage here\r\n"
            + line(self.key1)
            + b"\r\n"
            + b"ssh-ed25519 AAAA!!notbase64\n"
            + b'command="/bin/sh" '
            + line(self.key2)
            + b"\n"
            + line(rsaKey(1024))
            + b"\n"
            + b'from="10.0.0.1" '
            + line(self.key2)
            + b"\n",
        )
        self.assertEqual(
            self.db.getAuthorizedKeys(b"carol"), [self.key1.public(), self.key2.public()]
        )
        self.assertEqual(self.db.entries(b"carol")[1].options.fromText, "10.0.0.1")
        _, problems = parseAuthorizedKeys(self.dir.child("carol.pub").getContent())
        self.assertEqual(
            problems,
            [
                "line 1: not a public key",
                "line 3: damaged key",
                "line 4: the key option 'command' is not supported",
                "line 5: RSA keys need at least 2048 bits, this one has 1024",
            ],
        )

    def test_halfWrittenKey(self) -> None:
        """
        A line caught half-written, as when a file is rewritten in place,
        never passes for a key: a truncated RSA key would otherwise parse
        as a shorter, different key.  The line cut short at its comment
        is still the same key.
        """
        key = rsaKey(3072)
        full = line(key, "laptop")
        encoded = full.split()[1]
        for cut in (len(encoded) - 4, len(encoded) - 40, len(encoded) // 2):
            found, problems = parseAuthorizedKeys(b"ssh-rsa " + encoded[:cut])
            self.assertEqual((found, problems), ([], ["line 1: damaged key"]), cut)
        found, _ = parseAuthorizedKeys(full[:-3])
        self.assertEqual([entry.key for entry in found], [key.public()])

    def test_policyRefusals(self) -> None:
        """
        DSA keys and RSA keys under 2048 bits are skipped; ECDSA and RSA
        of 2048 bits are accepted.
        """
        small, dss = rsaKey(1024), Key(dsa.generate_private_key(2048))
        accepted = [Key(ec.generate_private_key(ec.SECP256R1())), rsaKey(2048)]
        data = b"\n".join(line(k) for k in [small, dss, *accepted])
        found, problems = parseAuthorizedKeys(data)
        self.assertEqual([entry.key for entry in found], [k.public() for k in accepted])
        self.assertEqual(
            problems,
            [
                "line 1: RSA keys need at least 2048 bits, this one has 1024",
                "line 2: DSA keys are not accepted",
            ],
        )

    def test_unsafeFiles(self) -> None:
        """
        A key file writable by group or others, or a symbolic link leading
        outside the keys directory, is ignored with a log line; a link
        inside the directory is followed.  Each is logged once per version
        of the file.
        """
        self.write("dave.pub", line(self.key1) + b"\n")
        os.chmod(self.dir.child("dave.pub").path, 0o664)
        outside = FilePath(self.mktemp())
        outside.setContent(line(self.key1) + b"\n")
        outside.chmod(0o644)
        os.symlink(outside.path, self.dir.child("erin.pub").path)
        self.write("real.pub", line(self.key2) + b"\n")
        os.symlink("real.pub", self.dir.child("frank.pub").path)
        messages: list[str] = []
        from twisted.logger import formatEvent, globalLogPublisher

        observer = lambda event: messages.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        try:
            for _ in range(2):
                self.assertEqual(self.db.getAuthorizedKeys(b"dave"), [])
                self.assertEqual(self.db.getAuthorizedKeys(b"erin"), [])
                self.assertEqual(self.db.getAuthorizedKeys(b"frank"), [self.key2.public()])
        finally:
            globalLogPublisher.removeObserver(observer)
        ignored = [m for m in messages if m.startswith("Ignoring key file")]
        self.assertEqual(len(ignored), 2, messages)
        self.assertIn("writable by group or others", ignored[0])
        self.assertIn("outside the keys directory", ignored[1])
        os.chmod(self.dir.child("dave.pub").path, 0o644)
        self.assertEqual(self.db.getAuthorizedKeys(b"dave"), [self.key1.public()])


class CheckerTests(SynchronousTestCase):
    """
    L{KeysDirectoryChecker} only calls a key acceptable after finding it.
    """

    def setUp(self) -> None:
        directory = FilePath(self.mktemp())
        directory.makedirs()
        self.key = newKey()
        directory.child("alice.pub").setContent(line(self.key))
        directory.child("alice.pub").chmod(0o644)
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
        self.assertEqual(self.successResultOf(d), Login("alice", UserPolicy()))
        d = self.checker.requestAvatarId(self.credentials(b"bob", self.key, True))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_refusedSignatureAlgorithms(self) -> None:
        """
        C{ssh-rsa} (SHA-1) and C{ssh-dss} signatures are refused, even for
        a listed key and even as a query: never "key OK".
        """
        rsa2048 = rsaKey(2048)
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("rita.pub").setContent(line(rsa2048))
        directory.child("rita.pub").chmod(0o644)
        checker = KeysDirectoryChecker(KeysDirectory(directory))
        data = b"session data"
        for algorithm in (b"ssh-rsa", b"ssh-dss"):
            for signature in (None, rsa2048.sign(data, signatureType=b"ssh-rsa")):
                credentials = SSHPrivateKey(
                    b"rita", algorithm, rsa2048.public().blob(), data, signature
                )
                self.failureResultOf(checker.requestAvatarId(credentials), UnauthorizedLogin)
        credentials = SSHPrivateKey(
            b"rita",
            b"rsa-sha2-512",
            rsa2048.public().blob(),
            data,
            rsa2048.sign(data, signatureType=b"rsa-sha2-512"),
        )
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(credentials)).username, "rita"
        )


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

    def test_policy(self) -> None:
        """
        Host keys other than ed25519 and RSA of 3072 bits or more are
        refused at start-up, saying why.
        """
        for key, reason in [
            (rsaKey(2048), "at least 3072 bits"),
            (Key(ec.generate_private_key(ec.SECP256R1())), "not offered"),
        ]:
            path = FilePath(self.mktemp())
            path.setContent(
                key._keyObject.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
            e = self.assertRaises(ValueError, loadHostKeys, [path])
            self.assertIn(reason, str(e))
        path = FilePath(self.mktemp())
        path.setContent(rsaKey(3072).toString("openssh"))
        self.assertEqual(list(loadHostKeys([path])), [b"ssh-rsa"])
