"""
Open file descriptors: raise the soft limit at start, and size the
connection cap so that connections cannot exhaust it.

A process that runs out of descriptors fails in C{accept}, and Twisted's
listening port then retries at every turn of the reactor: a spinning
reactor that logs a line per turn.  Sized from the limit, the cap on
connections (L{twisted_s3sftp.ssh.transport.S3SSHFactory.maxConnections})
pauses accepting before that, leaving L{RESERVED} descriptors for
everything else the server opens (S3 connections, key files, logs).
"""

from __future__ import annotations

import resource

#: Descriptors kept for what is not a client connection.
RESERVED = 128

#: The soft limit sought when the hard limit is unlimited.
UNLIMITED_TARGET = 1 << 20


def raiseOpenFileLimit() -> int:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit, as far as the
    system allows.

    @return: the soft limit now.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return UNLIMITED_TARGET if soft == resource.RLIM_INFINITY else soft


def connectionBudget(openFiles: int) -> int:
    """
    @param openFiles: the soft limit on open files.
    @return: how many client connections may be open at once.
    """
    return max(16, openFiles - RESERVED)
