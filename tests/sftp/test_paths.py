"""
Tests for L{twisted_s3sftp.sftp.paths}: client paths never leave the home.
"""

from twisted.trial.unittest import SynchronousTestCase

from twisted_s3sftp.errors import InvalidPath
from twisted_s3sftp.sftp.paths import (
    baseName,
    directoryPrefix,
    homePrefix,
    isValidUsername,
    normalise,
    objectKey,
    validateHomeTemplate,
)

HOME = "alice/"

# (client path, virtual path, S3 key or None for the home itself)
CONFINEMENT = [
    (b"", "/", None),
    (b".", "/", None),
    (b"/", "/", None),
    (b"//", "/", None),
    (b"..", "/", None),
    (b"/../../..", "/", None),
    (b"file.txt", "/file.txt", "alice/file.txt"),
    (b"/file.txt", "/file.txt", "alice/file.txt"),
    (b"./a/./b", "/a/b", "alice/a/b"),
    (b"a//b///c", "/a/b/c", "alice/a/b/c"),
    (b"a/b/../c", "/a/c", "alice/a/c"),
    (b"a/b/", "/a/b", "alice/a/b"),
    (b"../../etc/passwd", "/etc/passwd", "alice/etc/passwd"),
    (b"/../bob/secret", "/bob/secret", "alice/bob/secret"),
    (b"../alice/x", "/alice/x", "alice/alice/x"),
    (b"bob/../../bob/x", "/bob/x", "alice/bob/x"),
    (b"..foo/..bar", "/..foo/..bar", "alice/..foo/..bar"),
    ("caf\u00e9".encode(), "/caf\u00e9", "alice/caf\u00e9"),
]


class ConfinementTests(SynchronousTestCase):
    """
    L{normalise} and L{objectKey} keep every path inside the user's home.
    """

    def test_table(self) -> None:
        """
        Each client path maps to the expected virtual path and key: C{..}
        stops at the home, absolute paths are relative to the home, C{.},
        empty and repeated components vanish, and a name that looks like
        another user's home is just a directory in this one.
        """
        for raw, virtual, key in CONFINEMENT:
            with self.subTest(raw=raw):
                self.assertEqual(normalise(raw), virtual)
                if key is None:
                    self.assertRaises(InvalidPath, objectKey, HOME, virtual)
                    self.assertEqual(directoryPrefix(HOME, virtual), HOME)
                else:
                    self.assertEqual(objectKey(HOME, virtual), key)
                    self.assertTrue(objectKey(HOME, virtual).startswith(HOME))
                    self.assertEqual(directoryPrefix(HOME, virtual), key + "/")

    def test_nul(self) -> None:
        """
        A path containing NUL is refused.
        """
        self.assertRaises(InvalidPath, normalise, b"a\x00b")

    def test_controlCharacters(self) -> None:
        """
        Control characters (C0, DEL and C1) are refused; look-alikes of
        C{.} and C{/}, backslashes and decomposed accents are ordinary
        characters, never normalised.
        """
        for raw in (b"a\tb", b"a\nb", b"\x1b[31m", b"a\x7f", "a\u0085".encode()):
            self.assertRaises(InvalidPath, normalise, raw)
        for name in ("‥／bob", "a\\..\\b", "e\u0301", "é"):
            self.assertEqual(normalise(name.encode()), "/" + name)

    def test_badUTF8(self) -> None:
        """
        A path that is not UTF-8 is refused.
        """
        self.assertRaises(InvalidPath, normalise, b"\xff\xfe")

    def test_tooLong(self) -> None:
        """
        A path whose key would exceed S3's 1024 bytes is refused.
        """
        self.assertRaises(InvalidPath, objectKey, HOME, "/" + "x" * 1020)

    def test_baseName(self) -> None:
        """
        L{baseName} is the last component.
        """
        self.assertEqual(baseName("/a/b"), "b")
        self.assertEqual(baseName("/"), "/")


class UsernameTests(SynchronousTestCase):
    """
    Only names matching C{[a-z_][a-z0-9_.-]{0,31}} are users.
    """

    def test_valid(self) -> None:
        """
        Ordinary names, underscores, dots and dashes are accepted, up to
        32 characters.
        """
        for name in ["alice", "_svc", "a.b-c_d", "a" * 32, "x9"]:
            self.assertTrue(isValidUsername(name), name)

    def test_invalid(self) -> None:
        """
        Names with capitals, a leading digit/dot/dash, path characters,
        whitespace or over 32 characters are not users.
        """
        for name in [
            "",
            "Alice",
            "9lives",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "a" * 33,
            "alice\n",
            "\u00e9",
        ]:
            self.assertFalse(isValidUsername(name), name)

    def test_homePrefix(self) -> None:
        """
        The home template is filled with the username.
        """
        self.assertEqual(homePrefix("{username}/", "bob"), "bob/")
        self.assertEqual(homePrefix("in/{username}/", "bob"), "in/bob/")
        self.assertRaises(InvalidPath, homePrefix, "{username}/", "../x")


class HomeTemplateTests(SynchronousTestCase):
    """
    L{validateHomeTemplate} accepts only templates giving each user a
    distinct relative prefix.
    """

    def test_valid(self) -> None:
        """
        The default and nested templates are accepted.
        """
        for template in ["{username}/", "sftp/{username}/", "a/{username}/in/"]:
            self.assertEqual(validateHomeTemplate(template), template)

    def test_invalid(self) -> None:
        """
        Templates without exactly one C{{username}}, without a trailing
        slash, absolute, or with empty, C{.} or C{..} components are
        refused.
        """
        for template in [
            "home/",
            "{username}",
            "/{username}/",
            "{username}{username}/",
            "a//{username}/",
            "../{username}/",
            "{user}/",
            "{0}/{username}/",
        ]:
            self.assertRaises(ValueError, validateHomeTemplate, template)
