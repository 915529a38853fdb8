"""
The SFTP view of the store's objects: SFTP attributes, C{ls -l} style long
names, directory entries from a listing, and the modification time a file
reports.

SFTP version 3 has no file-type field: clients tell directories from files
only by the C{S_IFDIR}/C{S_IFREG} bits of C{permissions} (OpenSSH's C{cd}
refuses a target without C{S_IFDIR}), so every attribute dictionary built
here carries them.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import stat
import time

from ..store.interfaces import ObjectInfo, ObjectListing

#: Mode reported for every object.
FILE_MODE = stat.S_IFREG | 0o644

#: Mode reported for every directory (a prefix, or a C{dir/} marker).
DIRECTORY_MODE = stat.S_IFDIR | 0o755

_SIX_MONTHS = 182 * 24 * 3600


def modificationTime(info: ObjectInfo) -> int:
    """
    The time a file reports: the one a client set, kept in the object's
    C{mtime} metadata (seconds since the epoch, as rclone and Cyberduck
    write it, possibly with a fraction), or else when S3 stored it.  A
    stored time that SFTP version 3 cannot carry (an unsigned 32-bit
    count of seconds: before 1970 or after 2106) is ignored, since
    another tool may have written it.

    @param info: from a HEAD, which reports metadata.
    @return: seconds since the epoch.
    """
    value = info.metadata.get("mtime")
    if value is not None:
        try:
            stored = int(float(value))
        except (ValueError, OverflowError):
            pass
        else:
            if 0 <= stored < 2**32:
                return stored
    return info.mtime


def fileAttributes(size: int, mtime: int) -> dict[str, int]:
    """
    @return: the SFTP attributes of a file of C{size} bytes.
    """
    return {
        "size": size,
        "uid": 0,
        "gid": 0,
        "permissions": FILE_MODE,
        "atime": mtime,
        "mtime": mtime,
    }


def directoryAttributes(mtime: int) -> dict[str, int]:
    """
    @return: the SFTP attributes of a directory.
    """
    return {
        "size": 0,
        "uid": 0,
        "gid": 0,
        "permissions": DIRECTORY_MODE,
        "atime": mtime,
        "mtime": mtime,
    }


def longName(name: str, attrs: dict[str, int], now: float) -> str:
    """
    Format one C{ls -l} line, as OpenSSH's C{ls -l} prints it verbatim.

    @param name: the entry's name.
    @param attrs: its attributes, from L{fileAttributes} or
        L{directoryAttributes}.
    @param now: the current time, which decides between showing the time
        of day and the year, as C{ls} does.
    @return: the line, without a newline.
    """
    mode = stat.filemode(attrs["permissions"])
    mtime = attrs["mtime"]
    when = time.gmtime(mtime)
    if abs(now - mtime) < _SIX_MONTHS:
        stamp = time.strftime("%b %d %H:%M", when)
    else:
        stamp = time.strftime("%b %d  %Y", when)
    links = 2 if stat.S_ISDIR(attrs["permissions"]) else 1
    return f"{mode} {links:>4} {'owner':<8} {'group':<8} {attrs['size']:>12} {stamp} {name}"


def directoryEntries(
    prefix: str, listing: ObjectListing, now: float
) -> list[tuple[str, dict[str, int]]]:
    """
    Turn a listing of C{prefix} into the entries of that directory.

    A zero-byte object named exactly C{prefix} is the directory's own
    marker, not an entry.  Names are sorted, directories and files mixed,
    as S3 itself orders keys.

    @param prefix: the listed prefix, ending in C{/} (or the empty home).
    @param listing: what the store returned for it.
    @param now: the current time, given to sub-directories: a listing
        does not report their markers' times.
    @return: C{(name, attributes)} pairs.
    """
    entries: list[tuple[str, dict[str, int]]] = []
    for info in listing.objects:
        name = info.key[len(prefix) :]
        if name and "/" not in name:
            entries.append((name, fileAttributes(info.size, info.mtime)))
    for sub in listing.prefixes:
        name = sub[len(prefix) :].rstrip("/")
        if name and "/" not in name:
            entries.append((name, directoryAttributes(int(now))))
    entries.sort(key=lambda entry: entry[0])
    return entries
