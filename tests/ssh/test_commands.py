"""
Tests for L{twisted_s3sftp.ssh.commands}: which C{exec} command lines are
hash commands, and what they print.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.ssh.commands import HashCommand, parseCommand

STORED = ("sha256", "md5")


class ParseTests(SynchronousTestCase):
    """
    L{parseCommand} accepts exactly the hash commands of the algorithms
    kept, split by shell-word rules, and nothing else.
    """

    def test_accepted(self) -> None:
        """
        C{md5sum} and C{sha256sum} with no argument, C{-} or one path, and
        C{rclone hashsum ALG [PATH]}; rclone's backslash escaping and
        quotes are undone.
        """
        for line, expected in [
            (b"md5sum", HashCommand("md5")),
            (b"md5sum -", HashCommand("md5")),
            (b"sha256sum /a/b.txt", HashCommand("sha256", "/a/b.txt")),
            (b"md5sum /dir/a\\ b\\(1\\).txt", HashCommand("md5", "/dir/a b(1).txt")),
            (b"md5sum '/it''s here'", HashCommand("md5", "/its here")),
            (b'sha256sum "/q u"', HashCommand("sha256", "/q u")),
            (b"rclone hashsum sha256", HashCommand("sha256")),
            (b"rclone hashsum md5 /x", HashCommand("md5", "/x")),
            ("md5sum /caf\u00e9".encode(), HashCommand("md5", "/caf\u00e9")),
        ]:
            self.assertEqual(parseCommand(line, STORED), expected, line)

    def test_refused(self) -> None:
        """
        Everything else is refused: algorithms not kept, options, several
        paths, other commands (rclone's shell probe among them), bad
        quoting, invalid UTF-8.
        """
        for line in [
            b"",
            b"sha1sum /x",
            b"rclone hashsum sha1",
            b"rclone hashsum crc32 /x",
            b"rclone md5sum /x",
            b"md5sum --check /x",
            b"md5sum -b /x",
            b"md5sum /a /b",
            b"echo ${ShellId}%ComSpec%",
            b"sh -c 'md5sum /x'",
            b"ls",
            b"md5sum '/unterminated",
            b"md5sum /\xff",
        ]:
            self.assertIsNone(parseCommand(line, STORED), line)
        self.assertEqual(parseCommand(b"sha1sum", ("sha256", "sha1")), HashCommand("sha1"))


class OutputTests(SynchronousTestCase):
    """
    L{HashCommand} prints GNU C{md5sum}'s lines.
    """

    def test_lines(self) -> None:
        """
        C{HEX  NAME}, C{-} for standard input; a name with a backslash or
        a newline is escaped, the line starting with a backslash.
        """
        digest = bytes(range(16))
        self.assertEqual(
            HashCommand("md5", "/a b").line(digest), b"000102030405060708090a0b0c0d0e0f  /a b\n"
        )
        self.assertEqual(
            HashCommand("md5", "/a\\b").line(digest),
            b"\\000102030405060708090a0b0c0d0e0f  /a\\\\b\n",
        )
        self.assertEqual(HashCommand("md5").ofInput(b""), b"d41d8cd98f00b204e9800998ecf8427e  -\n")
        self.assertEqual(HashCommand("sha256").ofInput(b"abc")[:16], b"ba7816bf8f01cfea")
