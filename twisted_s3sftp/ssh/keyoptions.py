"""
Options on a key line of a C{<user>.pub} file, in OpenSSH's
C{authorized_keys} grammar (sshd(8), "AUTHORIZED_KEYS FILE FORMAT").

A line may start with options before the key type: comma-separated,
names case-insensitive, values in double quotes (C{\\"} inside them), no
white space outside quotes.  This server enforces:

  - C{from="pattern-list"}: the client's address must match
    (L{twisted_s3sftp.ssh.addresses}; addresses and networks only, no DNS).
    A second C{from=} on a line is an error, as in sshd.
  - C{expiry-time="YYYYMMDD[HHMM[SS]][Z]"}: the key is refused from that
    instant on; in the server's time zone unless it ends in C{Z}, as sshd
    reads it.  With several, the earliest holds.

and accepts C{restrict}, C{no-port-forwarding}, C{no-agent-forwarding},
C{no-X11-forwarding}, C{no-pty} and C{no-user-rc}, which forbid what an
SFTP-only server never offers anyway.  Any other option (C{command=},
C{cert-authority}, C{principals=}, C{permitopen=}, C{no-touch-required},
a misspelling) is an error: the line is skipped rather than trusted
without a restriction its author meant.

Pure: no Twisted, no boto3.
"""

from __future__ import annotations

import calendar
import re
import time

from attrs import frozen

from .addresses import AddressPattern, allowed, parsePatternList

#: Options accepted without effect: restrictions this server always has.
NO_OPS = frozenset(
    (
        "restrict",
        "no-port-forwarding",
        "no-agent-forwarding",
        "no-x11-forwarding",
        "no-pty",
        "no-user-rc",
    )
)

_NAME = re.compile(r"[A-Za-z0-9-]+")
_EXPIRY = re.compile(r"(\d{8})(\d{4}(\d{2})?)?(Z|z|UTC)?")


@frozen
class KeyOptions:
    """
    What the options of one key line ask.

    @ivar text: the options as written (empty for none), kept when
        C{s3sftp-keys} rewrites the file.
    @ivar sources: the C{from=} patterns, or L{None} for any address.
    @ivar expires: when the key stops being accepted (seconds since the
        epoch), or L{None}.
    """

    text: str = ""
    sources: tuple[AddressPattern, ...] | None = None
    expires: float | None = None

    def refusal(self, host: str | None, now: float) -> str | None:
        """
        @param host: the client's address.
        @param now: the current time.
        @return: why a login with this key must be refused, for the log,
            or L{None}.
        """
        if self.expires is not None and now >= self.expires:
            return f"the key expired at {_utc(self.expires)} (expiry-time)"
        if self.sources is not None and not allowed(self.sources, host):
            return f"{host} does not match from={self.fromText!r}"
        return None

    @property
    def fromText(self) -> str:
        """
        The C{from=} pattern list, as parsed.
        """
        return ",".join(("!" if p.negated else "") + p.text for p in self.sources or ())


def parseExpiry(text: str) -> float:
    """
    @param text: an C{expiry-time} value, C{YYYYMMDD[HHMM[SS]][Z]} (C{z}
        and C{UTC} too, as sshd takes them).
    @return: the instant it names, in seconds since the epoch.
    @raise ValueError: if it is not one.
    """
    match = _EXPIRY.fullmatch(text)
    if match is None:
        raise ValueError(f"expiry-time {text!r} is not YYYYMMDD[HHMM[SS]][Z]")
    digits = match.group(1) + (match.group(2) or "0000")
    if match.group(3) is None:
        digits += "00"
    try:
        parsed = time.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        raise ValueError(f"expiry-time {text!r} is not a valid date") from None
    if match.group(4):
        return float(calendar.timegm(parsed))
    return time.mktime(parsed)


def splitOptions(line: str) -> tuple[str, str]:
    """
    Split a key line that starts with options.

    @param line: the line, stripped.
    @return: the options, and the rest of the line (type, key, comment).
    @raise ValueError: for a quote left open.
    """
    quoted = False
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and quoted and index + 1 < len(line):
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return line[:index], line[index:].lstrip()
        index += 1
    if quoted:
        raise ValueError("unterminated quote in the key options")
    return line, ""


def parseOptions(text: str) -> KeyOptions:
    """
    @param text: the options field of a key line.
    @return: what they ask.
    @raise ValueError: with a reason, for an option this server cannot
        honour or a malformed one.
    """
    sources: tuple[AddressPattern, ...] | None = None
    expires: float | None = None
    for name, value in _options(text):
        if name in NO_OPS and value is None:
            continue
        if name == "from" and value is not None:
            if sources is not None:
                raise ValueError('multiple "from" options')
            sources = parsePatternList(value)
        elif name == "expiry-time" and value is not None:
            when = parseExpiry(value)
            expires = when if expires is None else min(expires, when)
        else:
            raise ValueError(f"the key option {name!r} is not supported")
    return KeyOptions(text, sources, expires)


def _options(text: str) -> list[tuple[str, str | None]]:
    """
    @return: each option's lower-cased name and unquoted value (L{None}
        for a flag).
    @raise ValueError: for a malformed option.
    """
    found: list[tuple[str, str | None]] = []
    index = 0
    while index < len(text):
        match = _NAME.match(text, index)
        if match is None:
            raise ValueError("malformed key options")
        name = match.group().lower()
        index = match.end()
        value: str | None = None
        if text.startswith('="', index):
            index += 2
            chars = []
            while index < len(text) and text[index] != '"':
                if text[index] == "\\" and text[index + 1 : index + 2] == '"':
                    index += 1
                chars.append(text[index])
                index += 1
            if index >= len(text):
                raise ValueError("unterminated quote in the key options")
            value = "".join(chars)
            index += 1
        found.append((name, value))
        if index < len(text):
            if text[index] != ",":
                raise ValueError("malformed key options")
            index += 1
            if index == len(text):
                raise ValueError("malformed key options")
    return found


def formatExpiry(when: float) -> str:
    """
    @param when: seconds since the epoch.
    @return: it as an C{expiry-time} value in UTC (C{YYYYMMDDHHMMSSZ}).
    """
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(when))


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
