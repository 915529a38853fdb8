"""
The few C{exec} commands the server answers: hash commands, as sync tools
send them (rclone verifies every upload with C{md5sum PATH}), answered from
the digests stored with each object and never by a shell.

A command line is split by POSIX shell-word rules (C{shlex}), which undo
the backslash escaping and quoting rclone and others apply to paths, and
must then be exactly one of:

  - C{md5sum}, C{sha1sum} or C{sha256sum}, with no argument or one path;
  - C{rclone hashsum md5|sha1|sha256}, with no argument or one path (what
    rclone 1.71 and later probe SHA-256 with);

and only for an algorithm the server keeps (C{--hashes}), so that a sync
tool's probe picks exactly those.  Anything else (a shell, other
commands, options, several paths, redirections) is refused, as every
C{exec} was before.

With no path the command hashes its standard input, at most
L{MAX_STDIN} bytes: that is rclone's probe, which expects the digest of
the empty string.  With a path the answer is GNU C{md5sum}'s line.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import hashlib
import shlex

from attrs import frozen

#: The command names, and the algorithm each prints.
SUM_COMMANDS = {"md5sum": "md5", "sha1sum": "sha1", "sha256sum": "sha256"}

#: The algorithms C{rclone hashsum} is answered for.
RCLONE_HASHES = frozenset(("md5", "sha1", "sha256"))

#: The most bytes of standard input a command without a path hashes.
MAX_STDIN = 64 * 1024


@frozen
class HashCommand:
    """
    One hash command.

    @ivar algorithm: what it prints.
    @ivar path: the path it names, as given (unescaped), or L{None} to hash
        standard input.
    """

    algorithm: str
    path: str | None = None

    def line(self, digest: bytes) -> bytes:
        """
        @return: the output for C{digest}: C{HEX  NAME} and a newline, the
            name C{-} for standard input; a name with a backslash or a
            newline is escaped and the line starts with a backslash, as GNU
            C{md5sum} writes it (rclone strips that backslash).
        """
        name = "-" if self.path is None else self.path
        prefix = ""
        if "\\" in name or "\n" in name:
            prefix = "\\"
            name = name.replace("\\", "\\\\").replace("\n", "\\n")
        return f"{prefix}{digest.hex()}  {name}\n".encode()

    def ofInput(self, data: bytes) -> bytes:
        """
        @return: the output for standard input C{data}.
        """
        return self.line(hashlib.new(self.algorithm, data, usedforsecurity=False).digest())


def parseCommand(command: bytes, stored: tuple[str, ...]) -> HashCommand | None:
    """
    @param command: the C{exec} request's command line.
    @param stored: the algorithms the server keeps.
    @return: the hash command it is, or L{None} if it is none (refused).
    """
    try:
        words = shlex.split(command.decode("utf-8"), posix=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if words[:1] and words[0] in SUM_COMMANDS:
        algorithm, arguments = SUM_COMMANDS[words[0]], words[1:]
    elif words[:2] == ["rclone", "hashsum"] and len(words) > 2 and words[2] in RCLONE_HASHES:
        algorithm, arguments = words[2], words[3:]
    else:
        return None
    if algorithm not in stored or len(arguments) > 1:
        return None
    if arguments and (not arguments[0] or arguments[0].startswith("-")):
        # Options (--check, -b ...) are not served; "-" is standard input.
        return HashCommand(algorithm) if arguments[0] == "-" else None
    return HashCommand(algorithm, arguments[0] if arguments else None)
