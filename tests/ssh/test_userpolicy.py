"""
Tests for L{twisted_s3sftp.ssh.userpolicy}: the policy file and how its
layers combine; and for the checker's use of it
(L{twisted_s3sftp.ssh.keys.KeysDirectoryChecker}).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.sftp.rights import ALL_RIGHTS, PRESETS, Rights
from twisted_s3sftp.ssh.keys import ClientKey, KeysDirectory, KeysDirectoryChecker, Login
from twisted_s3sftp.ssh.userpolicy import UserPolicy, parsePolicy
from twisted_s3sftp.store.interfaces import ObjectSettings

STATE = ".s3sftp/uploads/"


def parse(text: str, isDefault: bool = False) -> UserPolicy:
    """
    @return: the policy C{text} describes.
    """
    return parsePolicy(text.encode("utf-8"), STATE, isDefault)


class ParseTests(SynchronousTestCase):
    """
    L{parsePolicy} reads every field and refuses anything unexpected.
    """

    def test_everyField(self) -> None:
        """
        A file with every field gives the policy it describes.
        """
        policy = parse(
            "version = 1\n"
            'access = "drop-box"\n'
            'allow_from = ["198.51.100.0/24", "2001:db8:42::/48"]\n'
            "expires = 2027-03-31T00:00:00Z\n"
            'max_file_size = "20GiB"\n'
            'home = "inbound/acme/"\n'
            "[s3]\n"
            'storage_class = "STANDARD_IA"\n'
            'sse = "aws:kms"\n'
            'sse_kms_key_id = "arn:aws:kms:eu-west-1:1:key/k"\n'
            'tags = { partner = "acme", b = "2" }\n'
        )
        self.assertEqual(policy.rights, Rights(PRESETS["drop-box"], 20 * 1024**3))
        self.assertEqual(policy.expires, 1806451200.0)
        self.assertEqual(policy.home, "inbound/acme/")
        self.assertEqual(
            policy.settings,
            ObjectSettings(
                "STANDARD_IA",
                "aws:kms",
                "arn:aws:kms:eu-west-1:1:key/k",
                [("partner", "acme"), ("b", "2")],
            ),
        )
        self.assertIsNone(policy.refusal("198.51.100.7", 0))
        self.assertIsNotNone(policy.refusal("203.0.113.1", 0))
        self.assertIn("expired at 2027-03-31T00:00:00Z", policy.refusal("198.51.100.7", 2e9) or "")

    def test_empty(self) -> None:
        """
        A user's file with no field (what a login sees while an editor
        rewrites it in place) is an error, not every right; C{version = 1}
        alone is every right, and so is an empty default policy.
        """
        for empty in ("", "# nothing yet\n"):
            self.assertRaises(ValueError, parse, empty)
        self.assertEqual(parse("version = 1"), UserPolicy())
        self.assertEqual(parse("version = 1").rights.granted, frozenset(ALL_RIGHTS))
        self.assertEqual(parse("", isDefault=True), UserPolicy())

    def test_permissions(self) -> None:
        """
        C{permissions} lists rights explicitly.
        """
        policy = parse('permissions = ["list", "upload"]\n')
        self.assertEqual(policy.rights.granted, {"list", "upload"})
        self.assertEqual(policy.rights.describe(), "list,upload")
        self.assertEqual(parse("permissions = []\n").rights.describe(), "none")

    def test_refused(self) -> None:
        """
        Invalid TOML, an unknown field, a wrong type or a bad value is an
        error, with a reason.
        """
        cases = {
            'access = "drop-box': "invalid TOML",
            "colour = 1": "unknown field 'colour'",
            'access = "admin"': "access must be one of",
            'access = "read-only"\npermissions = ["list"]': "not both",
            'permissions = ["list", "chmod"]': "unknown permission 'chmod'",
            'permissions = "list"': "list of strings",
            "allow_from = []": "non-empty list",
            'allow_from = ["office.example.com"]': "no DNS",
            "expires = 2027-03-31T00:00:00": "with its offset",
            "expires = 2027-03-31": "with its offset",
            "expires = 0001-01-01T00:00:00+01:00": "after 1970",
            "a = " + "[" * 5000 + "]" * 5000: "invalid TOML",
            '[s3]\nsse = "aws:kms"\nsse_kms_key_id = ""': "KMS key id is empty",
            '[s3]\ntags = { "aws:x" = "y" }': "S3's own",
            'expires = "2027-03-31T00:00:00Z"': "with its offset",
            "max_file_size = true": "max_file_size must be",
            "max_file_size = 0": "positive",
            'max_file_size = "lots"': "not a size",
            'home = "/abs/"': "must end with '/' and not start",
            'home = "no-slash"': "must end with '/'",
            'home = "a/../b/"': "'..'",
            'home = ".s3sftp/"': "overlaps the state prefix",
            'home = ".s3sftp/uploads/x/"': "overlaps the state prefix",
            "version = 2": "version must be 1",
            "version = true": "version must be 1",
            "version = 1.0": "version must be 1",
            "access = []": "access must be one of",
            "access = { a = 1 }": "access must be one of",
            '[s3]\ncolour = "x"': "unknown field 's3.colour'",
            '[s3]\nstorage_class = "COLD"': "storage class",
            '[s3]\nsse = "rot13"': "AES256 or aws:kms",
            '[s3]\nsse_kms_key_id = "k"': "needs sse aws:kms",
            "[s3]\ntags = { a = 1 }": "table of strings",
            '[s3]\ntags = { "a<b" = "x" }': "tag",
            "s3 = 1": "s3 must be a table",
        }
        for text, reason in cases.items():
            with self.subTest(text=text):
                error = self.assertRaises(ValueError, parse, text)
                self.assertIn(reason, str(error))
        self.assertRaises(ValueError, parsePolicy, b"\xff", STATE)

    def test_defaultPolicy(self) -> None:
        """
        The server's default policy may not set a home or S3 settings.
        """
        for text in ('home = "x/"', '[s3]\nsse = "AES256"'):
            self.assertRaises(ValueError, parse, text, True)
        self.assertEqual(parse('access = "read-only"', True).rights.describe(), "read-only")


class LayerTests(SynchronousTestCase):
    """
    Layers only narrow.
    """

    def test_narrowed(self) -> None:
        """
        The rights intersect, every allow list must pass, the earliest
        expiry and the smallest size hold; home and settings are the
        user's.
        """
        server = parse(
            'permissions = ["list", "download", "upload"]\nallow_from = ["10.0.0.0/8"]\n'
            'expires = 2030-01-01T00:00:00Z\nmax_file_size = "1GiB"\n',
            True,
        )
        user = parse(
            'access = "drop-box"\nallow_from = ["10.1.0.0/16"]\nexpires = 2029-01-01T00:00:00Z\n'
            'max_file_size = "2GiB"\nhome = "in/"\n[s3]\nsse = "AES256"\n'
        )
        policy = server.narrowed(user)
        self.assertEqual(policy.rights, Rights(frozenset({"upload"}), 1024**3))
        self.assertEqual(policy.expires, parse("expires = 2029-01-01T00:00:00Z").expires)
        self.assertIsNone(policy.refusal("10.1.2.3", 0))
        self.assertIsNotNone(policy.refusal("10.2.2.3", 0))
        self.assertEqual(policy.home, "in/")
        self.assertEqual(policy.settings.sse, "AES256")
        wider = parse('access = "read-write"')
        self.assertEqual(server.narrowed(wider).rights.granted, server.rights.granted)

    def test_settingsOver(self) -> None:
        """
        A user's S3 settings win field by field; a user's C{sse} brings its
        own KMS key id, or none.
        """
        server = ObjectSettings("STANDARD_IA", "aws:kms", "k1", [("team", "ops")])
        self.assertEqual(
            ObjectSettings(sse="AES256").over(server),
            ObjectSettings("STANDARD_IA", "AES256", None, [("team", "ops")]),
        )
        self.assertEqual(
            ObjectSettings(tags=[("p", "a")]).over(server),
            ObjectSettings("STANDARD_IA", "aws:kms", "k1", [("p", "a")]),
        )
        self.assertEqual(ObjectSettings().over(server), server)
        tooMany = ObjectSettings(tags=[(str(i), "v") for i in range(11)])
        self.assertRaises(ValueError, tooMany.checked)
        # What a HEAD reports is taken as it is.
        self.assertEqual(ObjectSettings("FSX_OPENZFS", "aws:kms:dsse").sse, "aws:kms:dsse")
        self.assertRaises(ValueError, ObjectSettings("FSX_OPENZFS").checked)
        self.assertEqual(
            ObjectSettings("GLACIER", "AES256").staging, ObjectSettings(None, "AES256")
        )
        self.assertEqual(ObjectSettings("GLACIER_IR").staging, ObjectSettings("GLACIER_IR"))


def credentials(key: Key, signed: bool, host: str | None, user: bytes = b"alice") -> ClientKey:
    """
    @return: public key credentials from C{host}.
    """
    data = b"session data"
    signature = key.sign(data) if signed else None
    plain = SSHPrivateKey(user, b"ssh-ed25519", key.public().blob(), data, signature)
    return ClientKey.fromCredentials(plain, host)


class CheckerPolicyTests(SynchronousTestCase):
    """
    The checker applies key options and policy files before ever
    answering "key OK".
    """

    def setUp(self) -> None:
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()
        self.key = Key(ed25519.Ed25519PrivateKey.generate())
        self.now = 1_800_000_000.0
        self.checker = KeysDirectoryChecker(
            KeysDirectory(self.dir), statePrefix=STATE, now=lambda: self.now
        )

    def write(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """
        Write a file of the keys directory.
        """
        path = self.dir.child(name)
        path.setContent(data)
        os.chmod(path.path, mode)

    def keyLine(self, options: str = "") -> bytes:
        """
        @return: the key's line, with C{options}.
        """
        line = self.key.public().toString("openssh") + b" alice@test\n"
        return (options.encode() + b" " + line) if options else line

    def assertRefused(self, host: str | None = "10.0.0.1") -> str:
        """
        Both a query and a signed login are refused, never "key OK".

        @return: the refusal's message.
        """
        self.failureResultOf(
            self.checker.requestAvatarId(credentials(self.key, False, host)), UnauthorizedLogin
        )
        failure = self.failureResultOf(
            self.checker.requestAvatarId(credentials(self.key, True, host)), UnauthorizedLogin
        )
        return failure.getErrorMessage()

    def test_fromOption(self) -> None:
        """
        A key with C{from=} is admitted from a matching address only.
        """
        self.write("alice.pub", self.keyLine('from="10.0.0.0/8"'))
        self.failureResultOf(
            self.checker.requestAvatarId(credentials(self.key, False, "10.0.0.1")), ValidPublicKey
        )
        login = self.successResultOf(
            self.checker.requestAvatarId(credentials(self.key, True, "10.0.0.1"))
        )
        self.assertEqual(login, Login("alice", UserPolicy()))
        self.assertIn("192.0.2.1 does not match", self.assertRefused("192.0.2.1"))
        self.assertIn("does not match", self.assertRefused(None))

    def test_expiryOption(self) -> None:
        """
        A key past its C{expiry-time} is refused, at the instant it names.
        """
        self.write("alice.pub", self.keyLine('expiry-time="20270115080000Z"'))
        self.now = 1_800_000_000.0 - 1
        self.successResultOf(self.checker.requestAvatarId(credentials(self.key, True, "10.0.0.1")))
        self.now = 1_800_000_000.0
        self.assertIn("expired", self.assertRefused())

    def test_policyFile(self) -> None:
        """
        The user's policy file is applied: its allow list and expiry
        refuse, and the login carries its rights.
        """
        self.write("alice.pub", self.keyLine())
        self.write("alice.toml", b'access = "read-only"\nallow_from = ["10.0.0.0/8"]\n')
        login = self.successResultOf(
            self.checker.requestAvatarId(credentials(self.key, True, "10.0.0.1"))
        )
        self.assertEqual(login.policy.rights.describe(), "read-only")
        self.assertIn("not in allow_from", self.assertRefused("192.0.2.1"))
        self.write("alice.toml", b"expires = 2020-01-01T00:00:00Z\n")
        self.assertIn("access expired", self.assertRefused())

    def test_failClosed(self) -> None:
        """
        A policy file that is invalid, unsafe, or a link leading out of the
        directory refuses the user; a repaired one admits them again.
        """
        self.write("alice.pub", self.keyLine())
        self.write("alice.toml", b'access = "drop-box')
        self.assertIn("policy file is unusable: invalid TOML", self.assertRefused())
        self.write("alice.toml", b'access = "drop-box"\n', 0o666)
        self.assertIn("writable by group or others", self.assertRefused())
        self.dir.child("alice.toml").remove()
        outside = FilePath(self.mktemp())
        outside.setContent(b"")
        os.symlink(outside.path, self.dir.child("alice.toml").path)
        self.assertIn("outside the keys directory", self.assertRefused())
        self.dir.child("alice.toml").remove()
        self.write("alice.toml", b"x" * (64 * 1024 + 1))
        self.assertIn("larger than", self.assertRefused())
        self.write("alice.toml", b"")
        self.assertIn("empty", self.assertRefused())
        os.symlink("gone.toml", self.dir.child("bob.toml").path)
        self.dir.child("alice.toml").remove()
        os.symlink("bob.toml", self.dir.child("alice.toml").path)
        self.assertIn("a symbolic link to nothing", self.assertRefused())
        self.dir.child("alice.toml").remove()
        self.write("alice.toml", b'access = "drop-box"\n')
        login = self.successResultOf(
            self.checker.requestAvatarId(credentials(self.key, True, "10.0.0.1"))
        )
        self.assertEqual(login.policy.rights.describe(), "drop-box")
        # Rewritten in place (same inode) with the same size and time, as
        # cp -p does: the change time still tells.
        path = self.dir.child("alice.toml").path
        stamp = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b'access="read-only"\n'.ljust(stamp.st_size))
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        after = os.stat(path)
        self.assertEqual(
            (after.st_ino, after.st_size, after.st_mtime_ns),
            (stamp.st_ino, stamp.st_size, stamp.st_mtime_ns),
        )
        login = self.successResultOf(
            self.checker.requestAvatarId(credentials(self.key, True, "10.0.0.1"))
        )
        self.assertEqual(login.policy.rights.describe(), "read-only")

    def test_severalLines(self) -> None:
        """
        As in sshd, every line with the key is tried: one whose options
        admit the login is enough.
        """
        self.write(
            "alice.pub", self.keyLine('from="10.0.0.0/8"') + self.keyLine('from="192.0.2.0/24"')
        )
        for host in ("10.0.0.1", "192.0.2.1"):
            self.successResultOf(self.checker.requestAvatarId(credentials(self.key, True, host)))
        self.assertIn("does not match", self.assertRefused("203.0.113.1"))

    def test_defaultPolicy(self) -> None:
        """
        The server's default policy narrows every user, and a user's file
        cannot widen it.
        """
        self.write("alice.pub", self.keyLine())
        self.write("alice.toml", b'access = "read-write"\n')
        checker = KeysDirectoryChecker(
            KeysDirectory(self.dir),
            parse('access = "read-only"\nallow_from = ["10.0.0.0/8"]', True),
            STATE,
            lambda: self.now,
        )
        login = self.successResultOf(
            checker.requestAvatarId(credentials(self.key, True, "10.0.0.1"))
        )
        self.assertEqual(login.policy.rights.describe(), "read-only")
        self.failureResultOf(
            checker.requestAvatarId(credentials(self.key, False, "192.0.2.1")), UnauthorizedLogin
        )


class ExampleTests(SynchronousTestCase):
    """
    The shipped example policy is one the server accepts.
    """

    def test_example(self) -> None:
        """
        C{etc/policy.example.toml} parses to a drop box with every field
        set.
        """
        from pathlib import Path

        example = Path(__file__).resolve().parents[2] / "etc" / "policy.example.toml"
        policy = parsePolicy(example.read_bytes(), STATE)
        self.assertEqual(policy.rights.describe(), "drop-box")
        self.assertEqual(policy.home, "inbound/acme/")
        self.assertEqual(policy.settings.tags, (("partner", "acme"),))
