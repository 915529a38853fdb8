"""
C{s3sftp-keys}: the administrator's command for the keys directory.

    s3sftp-keys [--keys-dir DIR] [--crypto-policy P] add USER [KEYFILE]
                                                 (standard input if no file)
    s3sftp-keys [--keys-dir DIR] remove USER [FINGERPRINT]
    s3sftp-keys [--keys-dir DIR] list
    s3sftp-keys [--keys-dir DIR] fingerprint USER

C{add} checks the username and every key against the server's own rules
(L{twisted_s3sftp.ssh.keys.parseAuthorizedKeys}: the crypto policy, no
options, no damaged lines) before writing anything, so a key it accepts is
a key the server accepts.  Files are written atomically (a temporary file
in the same directory, flushed, then renamed over the old one) with mode
0644, so a login never sees a half-written file.  The running server
needs no restart.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import TextIO

from twisted.conch.ssh.keys import Key

from ..sftp.paths import isValidUsername
from ..ssh.keys import fingerprint, parseAuthorizedKeys
from ..ssh.policy import MODERN, POLICIES, CryptoPolicy


class KeysError(Exception):
    """
    A refusal, with the message to print.
    """


def keyFile(keysDir: Path, user: str) -> Path:
    """
    @return: the key file of C{user}.
    @raise KeysError: if C{user} can never be a user.
    """
    if not isValidUsername(user):
        raise KeysError(f"{user!r} is not a valid username ([a-z_][a-z0-9_.-]{{0,31}})")
    return keysDir / f"{user}.pub"


def readKeys(path: Path, policy: CryptoPolicy = MODERN) -> list[Key]:
    """
    @return: the usable keys in C{path}, none if it does not exist.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parseAuthorizedKeys(data, policy)[0]


def writeKeys(path: Path, keys: list[Key], comment: str) -> None:
    """
    Replace C{path} atomically with one line per key, mode 0644.

    The new content is written beside it, under a hidden name the server
    ignores, and renamed over it: the usual atomic replacement of an
    administrator's key file.  It holds public keys, never any of the file
    data users upload (which never touches a disk).
    """
    lines = [key.public().toString("openssh") + b" " + comment.encode() for key in keys]
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def add(keysDir: Path, user: str, data: bytes, policy: CryptoPolicy = MODERN) -> list[str]:
    """
    Add the keys in C{data} to C{user}'s file, creating it if need be.
    Keys are judged by C{policy}: the server's C{--crypto-policy}.

    @return: the fingerprints added (keys already there are skipped).
    @raise KeysError: if the username or any line is refused; nothing is
        written then.
    """
    path = keyFile(keysDir, user)
    keys, problems = parseAuthorizedKeys(data, policy)
    if problems:
        raise KeysError("refused, nothing written:\n  " + "\n  ".join(problems))
    if not keys:
        raise KeysError("no key given")
    # The keys already there stay as they are, whatever the policy: this
    # command judges only what it adds.
    existing = readKeys(path)
    known = {fingerprint(key) for key in existing}
    added = [key for key in keys if fingerprint(key) not in known]
    if added:
        writeKeys(path, existing + added, f"{user}@s3sftp")
    return [fingerprint(key) for key in added]


def remove(keysDir: Path, user: str, which: str | None) -> list[str]:
    """
    Remove one key of C{user} (by fingerprint), or the whole file.

    @return: the fingerprints removed.
    @raise KeysError: if there is no such user or key.
    """
    path = keyFile(keysDir, user)
    if not path.exists():
        raise KeysError(f"no user {user}")
    existing = readKeys(path)
    if which is None:
        path.unlink()
        return [fingerprint(key) for key in existing]
    kept = [key for key in existing if fingerprint(key) != which]
    if len(kept) == len(existing):
        raise KeysError(f"{user} has no key {which}")
    if kept:
        writeKeys(path, kept, f"{user}@s3sftp")
    else:
        path.unlink()
    return [which]


def listUsers(keysDir: Path, policy: CryptoPolicy = MODERN) -> list[tuple[str, int]]:
    """
    @return: C{(user, number of keys usable under C{policy})} for every key
        file.
    """
    found = []
    for path in sorted(keysDir.glob("*.pub")):
        user = path.name[: -len(".pub")]
        if isValidUsername(user):
            found.append((user, len(readKeys(path, policy))))
    return found


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """
    Run C{s3sftp-keys}.

    @return: the exit status: 0, or 1 with a message on standard error.
    """
    parser = argparse.ArgumentParser(
        prog="s3sftp-keys", description="Manage the users of an s3sftp server."
    )
    parser.add_argument("--keys-dir", default="etc/keys", help="default: etc/keys")
    parser.add_argument(
        "--crypto-policy",
        default=MODERN.name,
        choices=sorted(POLICIES),
        help="the server's --crypto-policy, which decides the key types accepted (default: modern)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add keys to a user (creating it)")
    adding.add_argument("user")
    adding.add_argument("keyfile", nargs="?", help="a .pub file; standard input if absent")
    removing = commands.add_parser("remove", help="remove a user, or one key of it")
    removing.add_argument("user")
    removing.add_argument("fingerprint", nargs="?")
    commands.add_parser("list", help="list users and their number of keys")
    printing = commands.add_parser("fingerprint", help="print a user's key fingerprints")
    printing.add_argument("user")
    args = parser.parse_args(argv)
    keysDir = Path(args.keys_dir)
    policy = POLICIES[args.crypto_policy]
    try:
        if not keysDir.is_dir():
            raise KeysError(f"{keysDir} is not a directory")
        if args.command == "add":
            data = Path(args.keyfile).read_bytes() if args.keyfile else sys.stdin.buffer.read()
            for added in add(keysDir, args.user, data, policy) or ["(key already present)"]:
                print(f"added {args.user} {added}", file=out)
        elif args.command == "remove":
            for removed in remove(keysDir, args.user, args.fingerprint):
                print(f"removed {args.user} {removed}", file=out)
        elif args.command == "list":
            for user, count in listUsers(keysDir, policy):
                print(f"{user}\t{count} key(s)", file=out)
        else:
            path = keyFile(keysDir, args.user)
            if not path.exists():
                raise KeysError(f"no user {args.user}")
            for key in readKeys(path):
                print(f"{fingerprint(key)} {key.sshType().decode()}", file=out)
    except (KeysError, OSError) as e:
        print(f"s3sftp-keys: {e}", file=sys.stderr)
        return 1
    return 0
