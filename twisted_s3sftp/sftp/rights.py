"""
What a user may do: the rights of a session (L{Rights}), and the files a
connection stored itself (L{OwnFiles}), which a user without every right
may still look at, time and rename.

The rights, and the SFTP operations each one guards (the README has the
table, with the reasons):

  - always: C{realpath}, C{stat} of directories, the C{statvfs} and
    C{limits} extensions, CLOSE;
  - L{LIST}: C{stat} of files, and listing what others stored: without
    it, OPENDIR and READDIR succeed but show only the files of the
    session's own connection (L{OwnFiles}), so that clients that list the
    target before uploading (lftp's C{mirror -R}, rclone, WinSCP) still
    work, and nothing anyone else stored is revealed;
  - L{DOWNLOAD}: OPEN for reading, READ;
  - L{UPLOAD}: OPEN for writing a name that does not exist, WRITE, FSETSTAT
    on the handle;
  - L{OVERWRITE} (with L{UPLOAD}): writing over an existing name,
    C{posix-rename} onto one, setting the times of a stored object;
  - L{DELETE}: REMOVE, RMDIR;
  - L{RENAME}: RENAME, C{posix-rename};
  - L{MKDIR}: MKDIR;
  - own files: on a file the user uploaded (its C{x-amz-meta-uploader}
    names them, or this connection stored it, L{OwnFiles}), C{stat},
    setting its times and a rename to a free name, without L{LIST},
    L{OVERWRITE} or L{RENAME}: rclone sets a file's time after uploading
    it, over another of its pooled connections, and WinSCP uploads to
    C{name.filepart} and renames it.

Pure: no Twisted, no boto3.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field, frozen

from ..errors import PermissionDenied

LIST = "list"
DOWNLOAD = "download"
UPLOAD = "upload"
OVERWRITE = "overwrite"
DELETE = "delete"
RENAME = "rename"
MKDIR = "mkdir"

#: Every right, in the order they are shown.
ALL_RIGHTS = (LIST, DOWNLOAD, UPLOAD, OVERWRITE, DELETE, RENAME, MKDIR)

#: The presets a policy file's C{access} names.
PRESETS: dict[str, frozenset[str]] = {
    "read-write": frozenset(ALL_RIGHTS),
    "read-only": frozenset((LIST, DOWNLOAD)),
    "drop-box": frozenset((UPLOAD,)),
}

#: The most files a connection remembers storing (the oldest is forgotten
#: first): enough for any batch of one session, bounded whatever it sends.
OWN_FILES = 10_000


@frozen
class Rights:
    """
    The rights of one session.

    @ivar granted: the rights it has.
    @ivar maxFileSize: the largest file it may store, in bytes, or L{None}.
    """

    granted: frozenset[str] = frozenset(ALL_RIGHTS)
    maxFileSize: int | None = None

    def has(self, right: str) -> bool:
        """
        @return: whether C{right} is granted.
        """
        return right in self.granted

    def narrowed(self, other: Rights) -> Rights:
        """
        @return: what both C{self} and C{other} allow.
        """
        sizes = [size for size in (self.maxFileSize, other.maxFileSize) if size is not None]
        return Rights(self.granted & other.granted, min(sizes) if sizes else None)

    def describe(self) -> str:
        """
        @return: the preset these rights are, or the rights, comma-separated
            (C{"none"} for none), for the log and the audit trail.
        """
        for name, granted in PRESETS.items():
            if granted == self.granted:
                return name
        return ",".join(right for right in ALL_RIGHTS if right in self.granted) or "none"


class Refused(PermissionDenied):
    """
    An operation refused for a right the session lacks.

    @ivar right: the right missing.
    """

    def __init__(self, right: str, what: str) -> None:
        super().__init__(f"permission denied: {what} needs the {right!r} right")
        self.right = right


@define(eq=False)
class OwnFiles:
    """
    The files one connection stored, by key, with their attributes as they
    were stored, most recent last, at most L{OWN_FILES} of them.
    """

    _keys: OrderedDict[str, dict[str, int]] = field(factory=OrderedDict, init=False)

    def add(self, key: str, attrs: dict[str, int]) -> None:
        """
        Remember that this connection stored C{key}, with C{attrs}.
        """
        self._keys[key] = attrs
        self._keys.move_to_end(key)
        while len(self._keys) > OWN_FILES:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> dict[str, int] | None:
        """
        Forget C{key} (removed, or renamed away).

        @return: its attributes, if it was known.
        """
        return self._keys.pop(key, None)

    def under(self, prefix: str) -> list[tuple[str, dict[str, int]]]:
        """
        @return: C{(name, attributes)} of each file directly under
            C{prefix}.
        """
        return [
            (key[len(prefix) :], dict(attrs))
            for key, attrs in self._keys.items()
            if key.startswith(prefix) and "/" not in key[len(prefix) :]
        ]

    def __contains__(self, key: object) -> bool:
        return key in self._keys
