"""
C{s3sftp-keys}: the administrator's command for the keys directory.

    s3sftp-keys [--keys-dir DIR] [--crypto-policy P] add USER [KEYFILE]
                [--from PATTERNS] [--expires YYYYMMDD[HHMM[SS]][Z]]
                                                 (standard input if no file)
    s3sftp-keys [--keys-dir DIR] remove USER [FINGERPRINT]
    s3sftp-keys [--keys-dir DIR] list
    s3sftp-keys [--keys-dir DIR] fingerprint USER
    s3sftp-keys [--keys-dir DIR] policy USER [--access A | --permissions P,..]
                [--allow-from NET ...] [--expires ISO-DATE-TIME]
                [--max-file-size SIZE] [--home PREFIX]

C{add} checks the username and every key against the server's own rules
(L{twisted_s3sftp.ssh.keys.parseAuthorizedKeys}: the crypto policy, the
options the server honours, no damaged lines) before writing anything, so
a key it accepts is a key the server accepts.  C{--from} and C{--expires}
add C{from=} and C{expiry-time=} options to the keys added.  When it
rewrites a file, every line keeps its options.

C{policy} writes C{USER.toml} (L{twisted_s3sftp.ssh.userpolicy}), checked
by the server's own parser first; run it before C{add} for a new user, so
that the first login is already narrowed.

Files are written atomically (a temporary file in the same directory,
flushed, then renamed over the old one) with mode 0644, so a login never
sees a half-written file.  The running server needs no restart.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import TextIO

from ..config import DEFAULT_STATE_PREFIX
from ..sftp.paths import isValidUsername
from ..sftp.rights import ALL_RIGHTS, PRESETS
from ..ssh.keyoptions import parseExpiry, parseOptions
from ..ssh.keys import AuthorizedKey, fingerprint, parseAuthorizedKeys
from ..ssh.policy import MODERN, POLICIES, CryptoPolicy
from ..ssh.userpolicy import parsePolicy


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


def readKeys(path: Path, policy: CryptoPolicy = MODERN) -> list[AuthorizedKey]:
    """
    @return: the usable lines of C{path}, none if it does not exist.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parseAuthorizedKeys(data, policy)[0]


def writeFile(path: Path, data: bytes) -> None:
    """
    Replace C{path} atomically with C{data}, mode 0644.

    The new content is written beside it, under a hidden name the server
    ignores, and renamed over it: the usual atomic replacement of an
    administrator's file.  It holds public keys or a policy, never any of
    the file data users upload (which never touches a disk).
    """
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def writeKeys(path: Path, entries: list[AuthorizedKey], comment: str) -> None:
    """
    Replace C{path} atomically with one line per key, each with its
    options, mode 0644.
    """
    lines = []
    for entry in entries:
        line = entry.key.public().toString("openssh") + b" " + comment.encode()
        if entry.options.text:
            line = entry.options.text.encode("ascii") + b" " + line
        lines.append(line + b"\n")
    writeFile(path, b"".join(lines))


def keyOptions(sources: str | None, expires: str | None) -> bytes:
    """
    @param sources: a C{from=} pattern list, or L{None}.
    @param expires: an C{expiry-time=} value, or L{None}.
    @return: the options field they make (empty for none).
    @raise KeysError: if the server would refuse either.
    """
    options = []
    if sources is not None:
        options.append(f'from="{sources}"')
    if expires is not None:
        options.append(f'expiry-time="{expires}"')
    text = ",".join(options)
    try:
        parseOptions(text) if text else None
        if expires is not None:
            parseExpiry(expires)
    except ValueError as e:
        raise KeysError(str(e)) from None
    return text.encode("ascii")


def add(
    keysDir: Path,
    user: str,
    data: bytes,
    policy: CryptoPolicy = MODERN,
    options: bytes = b"",
) -> list[str]:
    """
    Add the keys in C{data} to C{user}'s file, creating it if need be.
    Keys are judged by C{policy}: the server's C{--crypto-policy}.

    @param options: options (from L{keyOptions}) put before each line of
        C{data}.
    @return: the fingerprints added (keys already there are skipped).
    @raise KeysError: if the username or any line is refused; nothing is
        written then.
    """
    path = keyFile(keysDir, user)
    if options:
        data = b"".join(
            options + (b"," if _hasOptions(line) else b" ") + line.strip() + b"\n"
            for line in data.splitlines()
            if line.strip() and not line.strip().startswith(b"#")
        )
    keys, problems = parseAuthorizedKeys(data, policy)
    if problems:
        raise KeysError("refused, nothing written:\n  " + "\n  ".join(problems))
    if not keys:
        raise KeysError("no key given")
    # The keys already there stay as they are, whatever the policy: this
    # command judges only what it adds.
    existing = readKeys(path)
    known = {fingerprint(entry.key) for entry in existing}
    if options and any(fingerprint(entry.key) in known for entry in keys):
        # The line already there would still admit the key without them.
        raise KeysError(
            "refused, nothing written: the key is already there; remove it "
            "first to give it new options"
        )
    added = [entry for entry in keys if fingerprint(entry.key) not in known]
    if added:
        writeKeys(path, existing + added, f"{user}@s3sftp")
    return [fingerprint(entry.key) for entry in added]


def _hasOptions(line: bytes) -> bool:
    """
    @return: whether a key line starts with options rather than its type.
    """
    first = line.split()[0] if line.split() else b""
    return not (first.startswith((b"ssh-", b"ecdsa-", b"sk-")))


def writePolicy(
    keysDir: Path,
    user: str,
    access: str | None = None,
    permissions: list[str] | None = None,
    allowFrom: list[str] | None = None,
    expires: str | None = None,
    maxFileSize: str | None = None,
    home: str | None = None,
    statePrefix: str = DEFAULT_STATE_PREFIX,
) -> Path:
    """
    Write C{user}'s policy file, after the server's own parser accepts it.

    @return: its path.
    @raise KeysError: if the server would refuse the file.
    """
    path = keyFile(keysDir, user).with_suffix(".toml")
    lines = ["# Written by s3sftp-keys policy; see the README's policy section."]
    if access is not None:
        lines.append(f"access = {_quoted(access)}")
    if permissions is not None:
        lines.append(f"permissions = [{', '.join(_quoted(p) for p in permissions)}]")
    if allowFrom:
        lines.append(f"allow_from = [{', '.join(_quoted(a) for a in allowFrom)}]")
    if expires is not None:
        lines.append(f"expires = {expires}")
    if maxFileSize is not None:
        lines.append(f"max_file_size = {_quoted(maxFileSize)}")
    if home is not None:
        lines.append(f"home = {_quoted(home)}")
    # Last: a file caught cut short has no field at all, which the server
    # refuses, rather than "version = 1" alone, which grants everything.
    lines.append("version = 1")
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        parsePolicy(data, statePrefix)
    except ValueError as e:
        raise KeysError(f"refused, nothing written: {e}") from None
    writeFile(path, data)
    return path


def _quoted(text: str) -> str:
    """
    @return: C{text} as a TOML basic string.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 32 for c in escaped):
        raise KeysError(f"{text!r} has a control character")
    return f'"{escaped}"'


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
        return [fingerprint(entry.key) for entry in existing]
    kept = [entry for entry in existing if fingerprint(entry.key) != which]
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
    adding.add_argument(
        "--from", dest="sources", help='only from these addresses: from="PATTERNS" on each key'
    )
    adding.add_argument(
        "--expires", help='refuse the keys from then on: expiry-time="YYYYMMDD[HHMM[SS]][Z]"'
    )
    removing = commands.add_parser("remove", help="remove a user, or one key of it")
    removing.add_argument("user")
    removing.add_argument("fingerprint", nargs="?")
    commands.add_parser("list", help="list users and their number of keys")
    printing = commands.add_parser("fingerprint", help="print a user's key fingerprints")
    printing.add_argument("user")
    policing = commands.add_parser("policy", help="write a user's policy file (USER.toml)")
    policing.add_argument("user")
    which = policing.add_mutually_exclusive_group()
    which.add_argument("--access", choices=list(PRESETS), help="a preset (default: read-write)")
    which.add_argument("--permissions", help=f"a comma-separated list of: {', '.join(ALL_RIGHTS)}")
    policing.add_argument(
        "--allow-from", action="append", help="an address or network allowed; repeatable"
    )
    policing.add_argument("--expires", help="e.g. 2027-03-31T00:00:00Z")
    policing.add_argument("--max-file-size", help="e.g. 20GiB")
    policing.add_argument("--home", help="a key prefix ending in /, instead of --home's")
    policing.add_argument(
        "--state-prefix",
        default=DEFAULT_STATE_PREFIX,
        help="the server's --state-prefix, which no home may overlap",
    )
    args = parser.parse_args(argv)
    keysDir = Path(args.keys_dir)
    policy = POLICIES[args.crypto_policy]
    try:
        if not keysDir.is_dir():
            raise KeysError(f"{keysDir} is not a directory")
        if args.command == "add":
            data = Path(args.keyfile).read_bytes() if args.keyfile else sys.stdin.buffer.read()
            options = keyOptions(args.sources, args.expires)
            for added in add(keysDir, args.user, data, policy, options) or [
                "(key already present)"
            ]:
                print(f"added {args.user} {added}", file=out)
        elif args.command == "policy":
            written = writePolicy(
                keysDir,
                args.user,
                args.access,
                args.permissions.split(",") if args.permissions else None,
                args.allow_from,
                args.expires,
                args.max_file_size,
                args.home,
                args.state_prefix,
            )
            print(f"wrote {written}", file=out)
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
            for entry in readKeys(path):
                line = f"{fingerprint(entry.key)} {entry.key.sshType().decode()}"
                print(line + (f" {entry.options.text}" if entry.options.text else ""), file=out)
    except (KeysError, OSError) as e:
        print(f"s3sftp-keys: {e}", file=sys.stderr)
        return 1
    return 0
