"""
Tests for L{twisted_s3sftp.tools.keyadmin}: the C{s3sftp-keys} command.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.keys import KeysDirectory, fingerprint
from twisted_s3sftp.tools.keyadmin import main


def publicLine(key: Key) -> bytes:
    """
    @return: C{key}'s public OpenSSH line.
    """
    return key.public().toString("openssh") + b" someone@laptop\n"


class KeysCommandTests(SynchronousTestCase):
    """
    C{s3sftp-keys add|remove|list|fingerprint}.
    """

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.key = Key(ed25519.Ed25519PrivateKey.generate())
        self.keyPath = self.dir.parent / "key.pub"
        self.keyPath.write_bytes(publicLine(self.key))

    def command(self, *args: str) -> tuple[int, str]:
        """
        @return: the exit status and standard output of the command.
        """
        out = io.StringIO()
        status = main(["--keys-dir", str(self.dir), *args], out)
        return status, out.getvalue()

    def test_addThenLogin(self) -> None:
        """
        C{add} writes C{USER.pub} with mode 0644, which the server's keys
        directory then accepts; adding the same key again changes nothing.
        """
        status, output = self.command("add", "alice", str(self.keyPath))
        self.assertEqual(status, 0)
        self.assertIn(fingerprint(self.key), output)
        path = self.dir / "alice.pub"
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        directory = KeysDirectory(FilePath(str(self.dir)))
        self.assertEqual(directory.getAuthorizedKeys(b"alice"), [self.key.public()])
        before = path.read_bytes()
        self.assertEqual(self.command("add", "alice", str(self.keyPath))[0], 0)
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual([p.name for p in self.dir.iterdir()], ["alice.pub"])

    def test_cryptoPolicy(self) -> None:
        """
        With C{--crypto-policy fips}, an ed25519 key (which the server would
        skip under that policy) is refused, and nothing is written; an ECDSA
        key is added.
        """
        from cryptography.hazmat.primitives.asymmetric import ec

        out = io.StringIO()
        status = main(
            [
                "--keys-dir",
                str(self.dir),
                "--crypto-policy",
                "fips",
                "add",
                "eve",
                str(self.keyPath),
            ],
            out,
        )
        self.assertEqual(status, 1)
        self.assertEqual(list(self.dir.iterdir()), [])
        ecdsa = self.dir.parent / "ecdsa.pub"
        ecdsa.write_bytes(publicLine(Key(ec.generate_private_key(ec.SECP384R1()))))
        status = main(
            ["--keys-dir", str(self.dir), "--crypto-policy", "fips", "add", "eve", str(ecdsa)],
            out,
        )
        self.assertEqual(status, 0)
        self.assertEqual([p.name for p in self.dir.iterdir()], ["eve.pub"])
        # Keys already there stay, whatever the policy of the command.
        self.assertEqual(self.command("add", "eve", str(self.keyPath))[0], 0)
        self.assertEqual(
            main(
                ["--keys-dir", str(self.dir), "--crypto-policy", "fips", "add", "eve", str(ecdsa)],
                out,
            ),
            0,
        )
        self.assertEqual(len(KeysDirectory(FilePath(str(self.dir))).getAuthorizedKeys(b"eve")), 2)

    def test_refusals(self) -> None:
        """
        A bad username, a key the policy refuses, a damaged line or options
        are refused and nothing is written.
        """
        weak = self.dir.parent / "weak.pub"
        weak.write_bytes(publicLine(Key(rsa.generate_private_key(65537, 1024))))
        dss = self.dir.parent / "dss.pub"
        dss.write_bytes(publicLine(Key(dsa.generate_private_key(2048))))
        options = self.dir.parent / "options.pub"
        options.write_bytes(b'command="x" ' + publicLine(self.key))
        for args in [
            ("add", "Alice", str(self.keyPath)),
            ("add", "../etc", str(self.keyPath)),
            ("add", "bob", str(weak)),
            ("add", "bob", str(dss)),
            ("add", "bob", str(options)),
        ]:
            self.assertEqual(self.command(*args)[0], 1, args)
        self.assertEqual(list(self.dir.iterdir()), [])

    def test_removeAndList(self) -> None:
        """
        C{list} shows users and their key counts; C{fingerprint} prints
        them; C{remove USER FINGERPRINT} removes one key, and C{remove
        USER} the user.
        """
        other = Key(ed25519.Ed25519PrivateKey.generate())
        second = self.dir.parent / "second.pub"
        second.write_bytes(publicLine(other))
        self.command("add", "alice", str(self.keyPath))
        self.command("add", "alice", str(second))
        self.command("add", "bob", str(second))
        self.assertEqual(self.command("list")[1], "alice\t2 key(s)\nbob\t1 key(s)\n")
        printed = self.command("fingerprint", "alice")[1]
        self.assertIn(fingerprint(self.key), printed)
        self.assertIn(fingerprint(other), printed)
        self.assertEqual(self.command("remove", "alice", fingerprint(self.key))[0], 0)
        self.assertEqual(self.command("fingerprint", "alice")[1].split()[0], fingerprint(other))
        self.assertEqual(self.command("remove", "alice", "SHA256:nope")[0], 1)
        self.assertEqual(self.command("remove", "bob")[0], 0)
        self.assertEqual(self.command("list")[1], "alice\t1 key(s)\n")
        self.assertEqual(self.command("remove", "carol")[0], 1)

    def test_fingerprintFormat(self) -> None:
        """
        Fingerprints look like OpenSSH's: C{SHA256:} and 43 characters of
        unpadded base64.
        """
        printed = fingerprint(self.key)
        self.assertTrue(printed.startswith("SHA256:"))
        self.assertEqual(len(printed), len("SHA256:") + 43)


class PolicyCommandTests(SynchronousTestCase):
    """
    C{s3sftp-keys policy}, and the key options C{add} writes and keeps.
    """

    setUp = KeysCommandTests.setUp

    def command(self, *args: str) -> int:
        """
        @return: the exit status of the command.
        """
        return main(["--keys-dir", str(self.dir), *args], io.StringIO())

    def test_policy(self) -> None:
        """
        C{policy} writes a file the server parses to what was asked, mode
        0644, before any key file exists; a value the server would refuse
        writes nothing.
        """
        from twisted_s3sftp.ssh.userpolicy import parsePolicy

        status = self.command(
            "policy",
            "acme",
            "--access",
            "drop-box",
            "--allow-from",
            "198.51.100.0/24",
            "--allow-from",
            "2001:db8::/32",
            "--expires",
            "2027-03-31T00:00:00Z",
            "--max-file-size",
            "20GiB",
            "--home",
            'inbound/"acme"/',
        )
        self.assertEqual(status, 0)
        path = self.dir / "acme.toml"
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)
        policy = parsePolicy(path.read_bytes(), ".s3sftp/uploads/")
        self.assertEqual(policy.rights.describe(), "drop-box")
        self.assertEqual(policy.rights.maxFileSize, 20 * 1024**3)
        self.assertEqual(policy.home, 'inbound/"acme"/')
        self.assertIsNone(policy.refusal("2001:db8::5", 0))
        self.assertEqual(self.command("policy", "acme", "--permissions", "list,upload"), 0)
        self.assertEqual(
            parsePolicy(path.read_bytes(), ".s3sftp/uploads/").rights.describe(), "list,upload"
        )
        before = path.read_bytes()
        for bad in (["--permissions", "list,chmod"], ["--allow-from", "office.example.com"]):
            self.assertEqual(self.command("policy", "acme", *bad), 1)
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), ["acme.toml"])

    def test_keyOptions(self) -> None:
        """
        C{add --from --expires} puts both options on the keys it adds; a
        later C{add} and a C{remove} keep every line's options; an option
        the server would refuse writes nothing.
        """
        self.assertEqual(
            self.command(
                "add", "bob", str(self.keyPath), "--from", "10.0.0.0/8", "--expires", "20300101Z"
            ),
            0,
        )
        path = self.dir / "bob.pub"
        self.assertTrue(path.read_text().startswith('from="10.0.0.0/8",expiry-time="20300101Z" '))
        other = Key(ed25519.Ed25519PrivateKey.generate())
        otherPath = self.dir.parent / "other.pub"
        otherPath.write_bytes(b"restrict " + publicLine(other))
        self.assertEqual(self.command("add", "bob", str(otherPath)), 0)
        entries = KeysDirectory(FilePath(str(self.dir))).entries(b"bob")
        self.assertEqual(
            [e.options.text for e in entries],
            ['from="10.0.0.0/8",expiry-time="20300101Z"', "restrict"],
        )
        self.assertEqual(self.command("remove", "bob", fingerprint(other)), 0)
        self.assertTrue(path.read_text().startswith('from="10.0.0.0/8"'))
        status = self.command("add", "bob", str(self.keyPath), "--from", "192.0.2.0/24")
        self.assertEqual(status, 1)
        self.assertTrue(path.read_text().startswith('from="10.0.0.0/8"'))
        for bad in (["--from", "host.example.com"], ["--expires", "2030"]):
            self.assertEqual(self.command("add", "carol", str(self.keyPath), *bad), 1)
        self.assertFalse((self.dir / "carol.pub").exists())
