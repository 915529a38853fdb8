"""
The server's log output: human-readable lines by default, JSON lines with
C{--log-format json}.

Either way, only events at C{info} and above are written: Conch logs every
authentication attempt and channel event at C{debug}, which twistd would
otherwise write too.

A JSON line holds C{time} (ISO 8601, UTC), C{level}, C{namespace},
C{message} (the event formatted as in the text log), C{traceback} for a
failure, and every field of the event, so that audit events
(L{twisted_s3sftp.ops.audit}) can be read field by field.  Values that are not
JSON types are written as strings.  (Twisted's own C{jsonFileLogObserver}
is made for reading events back into twisted.logger: it writes the raw
event, with the format string but no formatted message, an epoch float
for the time and the level as an object, and by default an RFC 7464
record separator before each line; log shippers and C{jq} want the
flat record above.)

twistd takes the observer from C{--logger}, a dotted name: L{configure}
records the one C{--log-format} asks for and names L{chosenObserver}.  It
is made by L{observerFactory}, writing where twistd would: standard output
with C{--nodaemon} or C{--logfile=-}, else the C{--logfile} (default
C{twistd.log}), appended to and never rotated (leave that to logrotate
with C{copytruncate}, or to journald).

L{quietObserver} is where the Conch classes the server subclasses log: it
keeps their warnings and drops their chatter (an event per SFTP packet or
window adjustment).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import provider

#: The log formats C{--log-format} accepts.
FORMATS = ("text", "json")

#: The format of a worker of C{--workers} (not an option): Twisted's own
#: JSON events, one per line, which the parent reads back and writes as
#: its own (L{twisted_s3sftp.ops.workers}).
RELAY = "relay"

# Conch logs every SFTP packet at info level; a log event per packet costs
# a large share of upload throughput (testbed.md).  Keep its warnings only.
quietObserver = FilteringLogObserver(
    globalLogPublisher,
    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
)


def jsonRecord(event: dict[str, Any]) -> str:
    """
    @param event: a twisted.logger event.
    @return: the event as one line of JSON, without its newline.
    """
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith(("log_", "_")) and key not in record and key != "format":
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str, ensure_ascii=False)


def jsonFileObserver(out: IO[str]) -> ILogObserver:
    """
    @return: an observer writing each event to C{out} as a JSON line.
    """

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        out.write(jsonRecord(event) + "\n")
        out.flush()

    return observe


def observerFactory(
    logFormat: str, logfile: str | None, nodaemon: bool
) -> Callable[[], ILogObserver]:
    """
    @param logFormat: C{"text"}, C{"json"} or L{RELAY}.
    @param logfile: twistd's C{--logfile}.
    @param nodaemon: twistd's C{--nodaemon}.
    @return: a factory for twistd's C{--logger}.
    """

    def make() -> ILogObserver:
        if logfile == "-" or (not logfile and nodaemon):
            out: IO[str] = sys.stdout
        else:
            out = open(logfile or "twistd.log", "a", encoding="utf-8")
        observer: ILogObserver
        if logFormat == RELAY:
            observer = jsonFileLogObserver(out, recordSeparator="")
        elif logFormat == "json":
            observer = jsonFileObserver(out)
        else:
            observer = textFileLogObserver(out)
        return FilteringLogObserver(
            observer, [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]
        )

    return make


#: The factory L{configure} chose, for twistd to call through
#: L{chosenObserver}.
_chosen: Callable[[], ILogObserver] | None = None


def configure(logFormat: str, logfile: str | None, nodaemon: bool) -> str:
    """
    Choose the log observer twistd will start.

    twistd takes C{--logger} as a dotted name, which it imports once all
    options are parsed; the choice is therefore kept here, and the name
    returned leads to it.

    @return: the dotted name to give twistd as its C{logger} option.
    """
    global _chosen
    _chosen = observerFactory(logFormat, logfile, nodaemon)
    return f"{__name__}.chosenObserver"


def chosenObserver() -> ILogObserver:
    """
    @return: the observer L{configure} chose (text to standard output if
        it was not called).
    """
    return (_chosen or observerFactory("text", "-", True))()
