"""
Per-user policy: what a user may do, from where, until when, in which home,
and how their objects are stored (L{UserPolicy}), read from a TOML file
(L{parsePolicy}): C{<user>.toml} beside the key file, or the server's
C{--default-policy}.

    version = 1                       # optional; only 1 exists
    access = "drop-box"               # "read-write" | "read-only" | "drop-box"
    # permissions = ["list", "upload"] (instead of access)
    allow_from = ["198.51.100.0/24"]  # address patterns, as from= takes them
    expires = 2027-03-31T00:00:00Z    # an offset date-time
    max_file_size = "20GiB"
    home = "inbound/acme/"            # replaces the --home template
    [s3]
    storage_class = "STANDARD_IA"
    sse = "aws:kms"
    sse_kms_key_id = "arn:aws:kms:..."
    tags = { partner = "acme" }

Layers only narrow (L{UserPolicy.narrowed}): the rights are the
intersection of every layer's, the address must pass every allow list,
the earliest expiry holds, and the smallest size limit.  C{home} and the
C{[s3]} table are the user file's alone.  Anything unexpected in a file (an
unknown field, a wrong type, a bad value, a local date-time) is an error,
and so is a user's file with no field at all (a file caught truncated
while an editor rewrites it): the caller refuses the user rather than
guess.

Pure: no Twisted, no boto3.
"""

from __future__ import annotations

import datetime
import time
import tomllib
from typing import Any

from attrs import frozen

from ..sftp.rights import ALL_RIGHTS, PRESETS, Rights
from ..store.interfaces import ObjectSettings
from ..store.parts import parseSize
from .addresses import AddressPattern, allowed, parsePattern

#: The largest policy file read.
MAX_POLICY_FILE = 64 * 1024

_FIELDS = frozenset(
    ("version", "access", "permissions", "allow_from", "expires", "max_file_size", "home", "s3")
)
_S3_FIELDS = frozenset(("storage_class", "sse", "sse_kms_key_id", "tags"))

#: The fields a server's C{--default-policy} may not have: they belong to
#: one user (C{--home} and the S3 options are the server's).
_USER_ONLY = frozenset(("home", "s3"))


@frozen
class UserPolicy:
    """
    The policy of one user, or of one layer of it.

    @ivar rights: the rights granted.
    @ivar sources: allow lists, each of which the client's address must
        pass; none for any address.
    @ivar expires: when logins stop being accepted (seconds since the
        epoch), or L{None}.
    @ivar home: the user's home (a key prefix ending in C{/}), or L{None}
        for the C{--home} template's.
    @ivar settings: the S3 settings over the server's.
    """

    rights: Rights = Rights()
    sources: tuple[tuple[AddressPattern, ...], ...] = ()
    expires: float | None = None
    home: str | None = None
    settings: ObjectSettings = ObjectSettings()

    def narrowed(self, other: UserPolicy) -> UserPolicy:
        """
        @param other: a narrower layer (the user's file over the server's
            default).
        @return: what both allow, with C{other}'s home and S3 settings
            where it has them.
        """
        expiries = [when for when in (self.expires, other.expires) if when is not None]
        return UserPolicy(
            self.rights.narrowed(other.rights),
            self.sources + other.sources,
            min(expiries) if expiries else None,
            other.home if other.home is not None else self.home,
            other.settings.over(self.settings),
        )

    def refusal(self, host: str | None, now: float) -> str | None:
        """
        @param host: the client's address.
        @param now: the current time.
        @return: why a login must be refused, for the log, or L{None}.
        """
        if self.expires is not None and now >= self.expires:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
            return f"the user's access expired at {when} (expires)"
        for sources in self.sources:
            if not allowed(sources, host):
                return f"{host} is not in allow_from"
        return None


def parsePolicy(data: bytes, statePrefix: str, isDefault: bool = False) -> UserPolicy:
    """
    @param data: a policy file's bytes.
    @param statePrefix: the server's C{--state-prefix}, which no home may
        hold or be inside.
    @param isDefault: whether this is the server's C{--default-policy},
        which may not set C{home} or C{[s3]}.
    @return: the policy it describes.
    @raise ValueError: with a one-line reason, for a file that is not
        valid TOML, or has an unknown field or a bad value.
    """
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"invalid TOML: {e}") from None
    except RecursionError:
        raise ValueError("invalid TOML: nested too deeply") from None
    if not table and not isDefault:
        # An empty file is what a login sees while an editor rewrites the
        # file in place: it must not mean every right.
        raise ValueError("empty: no field is set (write version = 1 for every right)")
    unknown = set(table) - _FIELDS
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    if isDefault and set(table) & _USER_ONLY:
        name = sorted(set(table) & _USER_ONLY)[0]
        raise ValueError(f"{name!r} belongs in a user's policy file, not the default policy")
    version = table.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version != 1:
        raise ValueError("version must be 1")
    return UserPolicy(
        Rights(_granted(table), _maxFileSize(table.get("max_file_size"))),
        _sources(table.get("allow_from")),
        _expires(table.get("expires")),
        _home(table.get("home"), statePrefix),
        _settings(table.get("s3")),
    )


def _granted(table: dict[str, Any]) -> frozenset[str]:
    if "access" in table and "permissions" in table:
        raise ValueError("give access or permissions, not both")
    if "access" in table:
        access = table["access"]
        if not isinstance(access, str) or access not in PRESETS:
            raise ValueError(f"access must be one of {', '.join(PRESETS)}")
        return PRESETS[access]
    if "permissions" in table:
        permissions = table["permissions"]
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise ValueError("permissions must be a list of strings")
        wrong = [p for p in permissions if p not in ALL_RIGHTS]
        if wrong:
            raise ValueError(f"unknown permission {wrong[0]!r} (known: {', '.join(ALL_RIGHTS)})")
        return frozenset(permissions)
    return frozenset(ALL_RIGHTS)


def _maxFileSize(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError('max_file_size must be a size such as "20GiB"')
    size = value if isinstance(value, int) else parseSize(value)
    if size <= 0:
        raise ValueError("max_file_size must be positive")
    return size


def _sources(value: object) -> tuple[tuple[AddressPattern, ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError("allow_from must be a non-empty list of addresses or networks")
    return (tuple(parsePattern(v.strip()) for v in value),)


def _expires(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise ValueError(
            "expires must be a date-time with its offset, such as 2027-03-31T00:00:00Z"
        )
    if value.timestamp() < 0:
        raise ValueError("expires must be after 1970")
    return value.timestamp()


def _home(value: object, statePrefix: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("home must be a string")
    if not value.endswith("/") or value.startswith("/"):
        raise ValueError("home must end with '/' and not start with it")
    if any(part in ("", ".", "..") for part in value[:-1].split("/")):
        raise ValueError("home must not have empty, '.' or '..' components")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value) or len(value.encode()) > 512:
        raise ValueError("home must be printable and at most 512 bytes")
    if value.startswith(statePrefix) or statePrefix.startswith(value):
        raise ValueError(f"home {value!r} overlaps the state prefix {statePrefix!r}")
    return value


def _settings(value: object) -> ObjectSettings:
    if value is None:
        return ObjectSettings()
    if not isinstance(value, dict):
        raise ValueError("s3 must be a table")
    unknown = set(value) - _S3_FIELDS
    if unknown:
        raise ValueError(f"unknown field 's3.{sorted(unknown)[0]}'")
    for name in ("storage_class", "sse", "sse_kms_key_id"):
        if name in value and not isinstance(value[name], str):
            raise ValueError(f"s3.{name} must be a string")
    tags = value.get("tags")
    if tags is not None and (
        not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())
    ):
        raise ValueError("s3.tags must be a table of strings")
    return ObjectSettings(
        value.get("storage_class"),
        value.get("sse"),
        value.get("sse_kms_key_id"),
        None if tags is None else tags.items(),
    ).checked()
