"""
The gateway's exceptions, each with the SFTP status code a client gets for it.

Every layer raises one of the L{GatewayError} subclasses below (the S3 module
translates boto3's errors into them);
L{twisted_s3sftp.sftp.status.statusFor} is the only place that turns an
exception into an SFTP status code and the message a client sees.

This module is part of the pure core: it imports neither C{twisted.internet}
nor C{boto3}, so the SFTP v3 status codes are defined here rather than taken
from L{twisted.conch.ssh.filetransfer}.
"""

from __future__ import annotations

# SFTP protocol version 3 status codes (draft-ietf-secsh-filexfer-02, 7).
# Version 3 stops at 8: OpenSSH prints "Unknown status" for anything higher,
# but shows the message with it.
FX_OK = 0
FX_EOF = 1
FX_NO_SUCH_FILE = 2
FX_PERMISSION_DENIED = 3
FX_FAILURE = 4
FX_BAD_MESSAGE = 5
FX_NO_CONNECTION = 6
FX_CONNECTION_LOST = 7
FX_OP_UNSUPPORTED = 8
#: From later drafts (filexfer-13, 9.1), which OpenSSH's own sftp-server
#: also sends for an exclusive open of an existing file.
FX_FILE_ALREADY_EXISTS = 11


class GatewayError(Exception):
    """
    Base of every error the gateway expects and can explain to a client.

    @cvar code: the SFTP status code sent for this kind of error.
    @ivar message: a short, ASCII, client-safe explanation.
    """

    code = FX_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPath(GatewayError):
    """
    A client path that cannot name an object (bad UTF-8, NUL or other
    control characters, too long).
    """

    code = FX_BAD_MESSAGE


class NoSuchFile(GatewayError):
    """
    The named file or directory does not exist.
    """

    code = FX_NO_SUCH_FILE


class PermissionDenied(GatewayError):
    """
    The store, or this gateway's policy, refuses the operation.
    """

    code = FX_PERMISSION_DENIED


class NotSupported(GatewayError):
    """
    An operation this gateway does not offer (yet, or ever, over S3).
    """

    code = FX_OP_UNSUPPORTED


class FileExists(GatewayError):
    """
    An exclusive open (C{FXF_EXCL}) named a file that already exists.
    """

    code = FX_FILE_ALREADY_EXISTS


class EndOfFile(GatewayError):
    """
    A read at or beyond the end of a file.
    """

    code = FX_EOF


class Changed(GatewayError):
    """
    The object changed (or vanished) between two requests that had to see
    the same object: a download's ranged reads, or a copy.
    """


class UploadFailed(GatewayError):
    """
    An upload cannot complete: a write was refused, or the store failed.
    The upload has been, or is being, aborted; no object will appear.
    """


class FileTooLarge(GatewayError):
    """
    A write would take a file past the size the user may store.
    """


class StoreError(GatewayError):
    """
    The object store refused or failed a call.

    @ivar storeCode: the store's own error code (e.g. C{"SlowDown"}), for
        the log; the client only sees L{message}.
    """

    def __init__(self, message: str, storeCode: str = "") -> None:
        super().__init__(message)
        self.storeCode = storeCode
