"""
The audit trail: one log event per login (success or failure), upload
outcome, download, rename, remove, mkdir and rmdir.

Each is an ordinary twisted.logger event in the namespace
C{twisted_s3sftp.audit} (kept from before this module moved into C{ops/}:
log shippers filter on it), at C{info} (a failed login or upload at C{warn}),
with a field C{audit} naming its kind and one field per fact, so that the
JSON log (L{twisted_s3sftp.ops.logformat}) can be filtered and read without
parsing messages:

  - C{login}: C{user}, C{source}, C{fingerprint} (the key's SHA256), C{outcome}
    (C{success} or C{failure}), for a success C{rights} (the effective
    rights, as L{twisted_s3sftp.sftp.rights.Rights.describe} names them),
    and for a failure C{reason}; and what the
    connection negotiated: C{kex}, C{hostKeyAlgorithm}, C{cipher} and
    C{mac} (C{<implicit>} with an AEAD cipher);
  - C{upload}: C{user}, C{path} (as the client named it), C{bucket}, C{key},
    C{bytes}, C{parts}, C{sha256}, C{etag}, C{versionId} (when the bucket
    keeps versions), C{seconds}, C{outcome} (C{stored}, C{failed} or
    C{aborted}) and, unless stored, C{reason};
  - C{download}: C{user}, C{path}, C{bucket}, C{key}, C{bytes} (sent),
    C{size}, C{seconds};
  - C{rename}: C{user}, C{path}, C{to}, C{bucket}, C{key}, C{toKey};
  - C{remove}, C{mkdir}, C{rmdir}: C{user}, C{path}, C{bucket}, C{key};
  - C{denied}: an operation the user's rights refuse: C{user}, C{path},
    C{operation}, C{right} (the right missing) and C{reason};
  - C{hash}: a hash command over C{exec} (L{twisted_s3sftp.ssh.commands}):
    C{user}, C{path} (C{-} for standard input), C{algorithm}, C{outcome}
    (C{answered}, C{none} when the object keeps no such hash, or
    C{failed}) and, when failed, C{reason}.

No event carries file contents or credentials.  Names a client chose are
logged as given, but control characters never reach a log line: paths with
them are refused before any operation, and usernames are escaped.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger(namespace="twisted_s3sftp.audit")

_FORMATS = {
    "login": "login {outcome} for {user} from {source} with {fingerprint}{_rights}{_why}",
    "upload": "upload {outcome}: {user} {path} -> s3://{bucket}/{key}, {bytes} bytes in "
    "{parts} part(s), {seconds:.3f} s{_why}",
    "download": "download: {user} {path} <- s3://{bucket}/{key}, {bytes} of {size} bytes, "
    "{seconds:.3f} s",
    "rename": "rename: {user} {path} -> {to} (s3://{bucket}/{key} -> {toKey})",
    "remove": "remove: {user} {path} (s3://{bucket}/{key})",
    "mkdir": "mkdir: {user} {path} (s3://{bucket}/{key})",
    "rmdir": "rmdir: {user} {path} (s3://{bucket}/{key})",
    "denied": "denied: {user} {operation} {path}{_why}",
    "hash": "hash {outcome}: {user} {algorithm} {path}{_why}",
}


def audit(kind: str, warn: bool = False, **fields: Any) -> None:
    """
    Emit one audit event.

    @param kind: a key of the formats above.
    @param warn: log at C{warn} rather than C{info}.
    @param fields: the event's facts.
    """
    reason = fields.get("reason")
    emit = log.warn if warn else log.info
    extras = {
        "_why": f": {reason}" if reason else "",
        "_rights": f" ({fields['rights']})" if fields.get("rights") else "",
    }
    try:
        # Formatted here with str.format, in C: twisted.logger formats an
        # event's fields one by one in Python, which cost a tenth of the
        # reactor's time for a session of small uploads (bench/README.md).
        text = _FORMATS[kind].format(**extras, **fields)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        # A fact missing or of an odd type: twisted.logger says so in the
        # line rather than raising here.
        emit(_FORMATS[kind], audit=kind, **extras, **fields)
        return
    emit("{_text}", audit=kind, _text=text, **fields)


def safeName(raw: bytes) -> str:
    """
    @return: a name a client sent (such as a username), printable: control
        characters and invalid UTF-8 escaped.
    """
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
