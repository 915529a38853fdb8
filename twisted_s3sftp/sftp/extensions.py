"""
The SFTP protocol limits this server enforces and the extensions it
offers, with the replies of C{limits@openssh.com} and
C{statvfs@openssh.com}.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import struct

#: The largest SFTP message accepted (its length field): OpenSSH's own
#: limit (256 KiB) plus room for a header, as its sftp-server allows.
#: A longer one closes the channel.
MAX_SFTP_MESSAGE = 256 * 1024 + 1024

#: The most data one WRITE may carry.
MAX_WRITE = 256 * 1024

#: The most data one READ returns (longer READs get a short reply, which
#: SFTP allows): the reply must fit in the 256 KiB message OpenSSH's
#: client accepts.
MAX_READ = 256 * 1024 - 1024

#: The most files and directories one session may have open at once.
MAX_HANDLES = 100

#: The most requests one session may have waiting for a reply; further
#: messages are read only as replies go out (and the SSH window then
#: stops the client).
MAX_PENDING = 1024

#: The most bytes of READ replies one session may have under way (asked
#: for but not answered, or answered but held back by the client's SSH
#: window) before further messages wait.
MAX_OUTGOING = 4 * 1024 * 1024

#: The extensions announced in the VERSION reply, with their versions;
#: C{check-file} is added by L{announced}.
EXTENSIONS = {
    b"posix-rename@openssh.com": b"1",
    b"statvfs@openssh.com": b"2",
    b"limits@openssh.com": b"1",
}


def announced(hashes: tuple[str, ...]) -> dict[bytes, bytes]:
    """
    @param hashes: the algorithms whose hashes the server keeps now.
    @return: the extensions to announce: L{EXTENSIONS}, and C{check-file}
        with those algorithms (clients read the value either as a version,
        as ProFTPD writes "1", or as the list; a list satisfies both).
        Objects stored with other algorithms are still answered for them.
    """
    return EXTENSIONS | {b"check-file": ",".join(hashes).encode("ascii")}


#: The figures C{statvfs@openssh.com} reports.  S3 has no capacity to
#: report, so C{df} shows a 1 PiB file system with nothing used, 4 KiB
#: blocks, 2**32 free inodes and 255-byte names.
STATVFS_BLOCK = 4096
STATVFS_BLOCKS = 2**50 // STATVFS_BLOCK
STATVFS_FILES = 2**32
STATVFS_NAME_MAX = 255
#: C{SSH2_FXE_STATVFS_ST_NOSUID}: no set-uid files here.
STATVFS_FLAGS = 0x2


def limitsReply() -> bytes:
    """
    @return: the body of the C{limits@openssh.com} reply: the largest
        message, READ and WRITE lengths, and the open-handle cap.
    """
    return struct.pack("!4Q", MAX_SFTP_MESSAGE, MAX_READ, MAX_WRITE, MAX_HANDLES)


def statvfsReply() -> bytes:
    """
    @return: the body of the C{statvfs@openssh.com} reply (the same for
        every path).
    """
    return struct.pack(
        "!11Q",
        STATVFS_BLOCK,
        STATVFS_BLOCK,
        STATVFS_BLOCKS,
        STATVFS_BLOCKS,
        STATVFS_BLOCKS,
        STATVFS_FILES,
        STATVFS_FILES,
        STATVFS_FILES,
        0,
        STATVFS_FLAGS,
        STATVFS_NAME_MAX,
    )
