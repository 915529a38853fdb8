"""
The one place where an exception becomes the SFTP status its client sees:
L{statusFor} maps it, L{sftpError} applies that to a failed operation, and
the decorator L{sftpOperation} runs an C{async} operation as a Deferred and
applies L{sftpError} to its failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from twisted.conch.ssh.filetransfer import SFTPError
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import FX_FAILURE, GatewayError

log = Logger()

T = TypeVar("T")


def asciiSafe(text: str, limit: int = 200) -> str:
    """
    Make C{text} safe for an SFTP status message.

    Conch sends no reply at all when a status message is not ASCII
    (conch-pitfalls item 4), so anything else is replaced.

    @param text: the message.
    @param limit: the longest message returned.
    @return: printable ASCII, at most C{limit} characters.
    """
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return safe[:limit]


def statusFor(error: BaseException | None) -> tuple[int, str] | None:
    """
    Map an exception to the SFTP status a client receives.

    @param error: whatever an operation raised.
    @return: C{(code, message)} for an expected error, or L{None} for an
        unexpected one, which the caller logs with context and answers with
        C{FX_FAILURE} and a generic message.
    """
    if isinstance(error, GatewayError):
        return error.code, asciiSafe(error.message)
    return None


def sftpError(failure: Failure, operation: str, subject: str) -> Failure:
    """
    Turn any failure of an SFTP operation into the status the client gets.

    Expected errors (L{GatewayError}) keep their code and message; anything
    else is logged with its traceback and context and answered with
    C{FX_FAILURE} and a message that reveals nothing.

    @param failure: the operation's failure.
    @param operation: the operation's name, for the log and the message.
    @param subject: what it was applied to (a path, a key), for the log.
    @return: a failure wrapping an ASCII-only L{SFTPError}.
    """
    status = statusFor(failure.value)
    if status is None:
        log.failure(
            "Unexpected error in {operation} on {subject}",
            failure,
            operation=operation,
            subject=subject,
        )
        status = (FX_FAILURE, f"{operation} failed (internal error)")
    return Failure(SFTPError(*status))


def sftpOperation(
    operation: str,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Deferred[T]]]:
    """
    Decorate an C{async} SFTP method: run it as a Deferred and translate
    its failure with L{sftpError}.

    @param operation: the name used in logs and messages.
    """

    def decorator(method: Callable[..., Awaitable[T]]) -> Callable[..., Deferred[T]]:
        @wraps(method)
        def wrapper(self: object, *args: Any) -> Deferred[T]:
            d: Deferred[T] = Deferred.fromCoroutine(method(self, *args))  # type: ignore[arg-type]
            if args and isinstance(args[0], bytes):
                subject = args[0].decode("utf-8", "replace")
            else:
                subject = getattr(self, "key", type(self).__name__)
            return d.addErrback(sftpError, operation, subject)

        return wrapper

    return decorator
