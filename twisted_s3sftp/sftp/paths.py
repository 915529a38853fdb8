"""
Client paths, virtual paths and S3 keys, and the confinement between them.

A client sends raw bytes.  L{normalise} turns them into a I{virtual path}:
an absolute, C{/}-separated path in the user's own tree, where C{/} is the
user's home.  C{..} stops at C{/}, exactly as in a chroot, so no virtual path
can name anything outside the home.  L{objectKey} then prefixes the home to
make an S3 key.  Relative client paths are taken relative to C{/}: SFTP has
no server-side working directory, and C{realpath(".")} is C{/}.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import re

from ..errors import InvalidPath

#: Usernames that may ever be users (also what a key file may be called).
USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")

#: Control characters (C0, DEL, C1): refused in paths.  They have no place
#: in a file name, S3 listings cannot carry some of them in XML, and in a
#: log line they could forge entries.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

#: S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


def isValidUsername(name: str) -> bool:
    """
    @param name: a candidate username.
    @return: whether C{name} matches C{[a-z_][a-z0-9_.-]{0,31}}; anything
        else is never a user, whatever files exist.
    """
    return USERNAME.fullmatch(name) is not None


def validateHomeTemplate(template: str) -> str:
    """
    Check a C{--home} template such as C{"{username}/"} or
    C{"customers/{username}/"}.

    @param template: the template, with one C{{username}} field.
    @return: C{template}, unchanged.
    @raise ValueError: with a one-line reason, when the template does not
        give every user a distinct, relative prefix ending in C{/}.
    """
    if template.count("{username}") != 1:
        raise ValueError("must contain {username} exactly once")
    try:
        home = template.format(username="user")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"is not a valid template ({e})") from None
    if not home.endswith("/"):
        raise ValueError("must end with '/'")
    if home.startswith("/"):
        raise ValueError("must not start with '/'")
    parts = home[:-1].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("must not contain empty, '.' or '..' components")
    return template


def homePrefix(template: str, username: str) -> str:
    """
    @param template: a template accepted by L{validateHomeTemplate}.
    @param username: a name accepted by L{isValidUsername}.
    @return: the S3 key prefix this user is confined to, ending in C{/}.
    """
    if not isValidUsername(username):
        raise InvalidPath("invalid username")
    return template.format(username=username)


def normalise(raw: bytes) -> str:
    """
    Turn a path a client sent into a virtual path.

    @param raw: the path bytes from the SFTP request.
    @return: an absolute path, C{/} for the home itself, with no C{.},
        C{..}, empty or repeated components and no trailing slash.
    @raise InvalidPath: for bytes that are not UTF-8 or contain NUL or
        another control character.  Nothing else is changed: no Unicode
        normalisation, and a backslash or a look-alike of C{.} or C{/} is
        an ordinary character of a name.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("path is not valid UTF-8") from None
    if "\x00" in text:
        raise InvalidPath("path contains NUL")
    if _CONTROL.search(text):
        raise InvalidPath("path contains a control character")
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def objectKey(home: str, virtualPath: str) -> str:
    """
    @param home: the user's prefix, from L{homePrefix}.
    @param virtualPath: a path from L{normalise}, not C{/}.
    @return: the S3 key of the object that C{virtualPath} names.
    @raise InvalidPath: for the home itself, or a key S3 cannot hold.
    """
    if virtualPath == "/":
        raise InvalidPath("the home directory is not a file")
    return _checkLength(home + virtualPath[1:])


def directoryPrefix(home: str, virtualPath: str) -> str:
    """
    @param home: the user's prefix, from L{homePrefix}.
    @param virtualPath: a path from L{normalise}.
    @return: the key prefix, ending in C{/}, under which the directory
        C{virtualPath} keeps its entries (the home itself for C{/}).
    """
    if virtualPath == "/":
        return home
    return _checkLength(home + virtualPath[1:] + "/")


def baseName(virtualPath: str) -> str:
    """
    @param virtualPath: a path from L{normalise}.
    @return: its last component (C{"/"} for the root).
    """
    if virtualPath == "/":
        return "/"
    return virtualPath.rsplit("/", 1)[1]


def _checkLength(key: str) -> str:
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidPath("path too long for S3")
    return key
