"""
The whole-file hashes kept with every object (SHA-256 always; MD5 and
SHA-1 as configured), whose running states can be saved and restored: what
an upload resumed in another process, or appended to later, needs to go on
hashing the file where the first one stopped.

CPython's C{hashlib} cannot export its state.  OpenSSL's low-level API can:
C{MD5_Init}, C{SHA1_Init}, C{SHA256_Init} and their C{_Update} and
C{_Final} work on plain contexts whose layout is public (C{<openssl/md5.h>},
C{<openssl/sha.h>}): the chaining value in 32-bit words, the bit count in
two words, the pending block of 64 bytes and its length (and, for SHA-256,
the digest length).  They are called here through C{ctypes}, which
releases the GIL for each call, as C{hashlib} does for large buffers, and
run at C{hashlib}'s speed (research/resume.md, section 3.2).

That API is deprecated in OpenSSL 3 and may be missing from a build made
without it, so L{problem} checks each algorithm against C{hashlib} on known
inputs, through a save and a restore, before anything relies on it; when it
fails, nothing may store or trust a saved state, and the caller says so.
Where it fails, L{FileHashes} uses C{hashlib}'s objects, whose digests are
the same but whose states cannot be saved.  MD5 and SHA-1 are asked for
with C{usedforsecurity=False}: they identify content for sync tools, and a
FIPS-mode OpenSSL allows them so.

A saved state (L{ResumableHash.state}) is portable: a version byte, the
chaining words and the bit count big-endian, then the pending bytes, so a
state saved on one machine restores on another whatever its byte order.

How the digests are kept with an object is here too (L{hashMetadata},
L{storedDigests}): C{x-amz-meta-sha256} in hex, C{x-amz-meta-md5chksum} in
base64 (the key and form rclone's S3 backend reads and writes, so rclone
pointed at the bucket itself sees the MD5 of multipart objects, whose ETags
are not one), C{x-amz-meta-sha1} in hex, and each state as
C{x-amz-meta-<algorithm>-state}, base64.

Pure core: no Twisted, no boto3.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import struct
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar

#: The algorithms that can be kept, in the order they are announced.
ALGORITHMS = ("sha256", "md5", "sha1")

#: The version byte that starts every saved state.
STATE_VERSION = 1

#: The most bytes a saved SHA-256 state takes: version, chaining value,
#: bit count, and up to 63 pending bytes.
MAX_STATE = 1 + 32 + 8 + 63

#: The version byte of a saved L{FileHashes} state of several algorithms
#: (one of SHA-256 alone is that hash's state, as it always was).
SET_VERSION = 2

#: Digest sizes, by algorithm.
DIGEST_SIZES = {"sha256": 32, "md5": 16, "sha1": 20}


def _contextType(words: int, withLength: bool) -> type[ctypes.Structure]:
    fields: list[tuple[str, Any]] = [
        ("h", ctypes.c_uint32 * words),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint),
    ]
    if withLength:
        fields.append(("md_len", ctypes.c_uint))
    return type(f"Context{words}", (ctypes.Structure,), {"_fields_": fields})


@cache
def _library() -> Any:
    """
    @return: libcrypto.
    @raise OSError: if it cannot be found.
    """
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise OSError("libcrypto not found")
    return ctypes.CDLL(name)


class ResumableHash:
    """
    One of OpenSSL's low-level hashes, with L{state} and L{fromState}.

    Use a subclass only once L{problem} has returned L{None} for its
    algorithm.

    @cvar algorithm: its name, one of L{ALGORITHMS}.
    @cvar prefix: the name of its functions in libcrypto (C{SHA256} for
        C{SHA256_Init} ...).
    @cvar words: the 32-bit words of its chaining value.
    """

    algorithm: ClassVar[str]
    prefix: ClassVar[str]
    words: ClassVar[int]
    _context: ctypes.Structure
    _contextClass: ClassVar[type[ctypes.Structure]]

    def __init_subclass__(cls) -> None:
        cls._contextClass = _contextType(cls.words, cls.algorithm == "sha256")

    def __init__(self) -> None:
        self._functions = self._typed()
        self._context = self._contextClass()
        self._functions[0](ctypes.byref(self._context))

    @classmethod
    @cache
    def _typed(cls) -> tuple[Any, Any, Any]:
        """
        @return: its C{_Init}, C{_Update} and C{_Final} functions, typed.
        @raise OSError: if libcrypto lacks them.
        """
        library = _library()
        pointer = ctypes.POINTER(cls._contextClass)
        functions = []
        for suffix, argtypes in (
            ("Init", [pointer]),
            ("Update", [pointer, ctypes.c_void_p, ctypes.c_size_t]),
            ("Final", [ctypes.c_char_p, pointer]),
        ):
            name = f"{cls.prefix}_{suffix}"
            if not hasattr(library, name):
                raise OSError(f"libcrypto has no {name}")
            # Indexing makes a function object of its own, whose argtypes
            # no other user of libcrypto in this process shares.
            function = library[name]
            function.argtypes = argtypes
            function.restype = ctypes.c_int
            functions.append(function)
        init, update, final = functions
        return init, update, final

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """
        Hash C{data} after what was hashed so far.
        """
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not size:
            return
        if isinstance(data, bytes):
            pointer: Any = ctypes.c_char_p(data)
        elif isinstance(data, memoryview) and data.readonly:
            pointer = ctypes.c_char_p(data.tobytes())
        else:
            pointer = (ctypes.c_char * size).from_buffer(data)
        self._functions[1](ctypes.byref(self._context), pointer, size)

    def digest(self) -> bytes:
        """
        @return: the digest of what was hashed; the state is unchanged.
        """
        copy = self._contextClass.from_buffer_copy(self._context)
        out = ctypes.create_string_buffer(DIGEST_SIZES[self.algorithm])
        self._functions[2](out, ctypes.byref(copy))
        return out.raw

    def hexdigest(self) -> str:
        """
        @return: L{digest}, in hexadecimal.
        """
        return self.digest().hex()

    @property
    def length(self) -> int:
        """
        The bytes hashed so far.
        """
        context: Any = self._context
        return ((context.Nh << 32) | context.Nl) // 8

    def state(self) -> bytes:
        """
        @return: the running state, portable (see the module docstring).
        """
        context: Any = self._context
        pending = bytes(context.data)[: context.num]
        bits = (context.Nh << 32) | context.Nl
        return struct.pack(f">B{self.words}IQ", STATE_VERSION, *context.h, bits) + pending

    @classmethod
    def fromState(cls, state: bytes) -> ResumableHash:
        """
        @param state: from L{state}, of the same algorithm.
        @return: a hash that goes on from it.
        @raise ValueError: if C{state} is not one.
        """
        layout = f">B{cls.words}IQ"
        head = struct.calcsize(layout)
        if not head <= len(state) < head + 64 or state[0] != STATE_VERSION:
            raise ValueError(f"not a saved {cls.algorithm.upper()} state")
        _, *words, bits = struct.unpack(layout, state[:head])
        pending = state[head:]
        if bits % 8 or (bits // 8) % 64 != len(pending):
            raise ValueError(f"an inconsistent {cls.algorithm.upper()} state")
        hashed = cls()
        context: Any = hashed._context
        context.h = (ctypes.c_uint32 * cls.words)(*words)
        context.Nl = bits & 0xFFFFFFFF
        context.Nh = bits >> 32
        ctypes.memmove(context.data, pending, len(pending))
        context.num = len(pending)
        if cls.algorithm == "sha256":
            context.md_len = 32
        return hashed


class ResumableSHA256(ResumableHash):
    """
    SHA-256 over OpenSSL's C{SHA256_CTX}.
    """

    algorithm = "sha256"
    prefix = "SHA256"
    words = 8


class ResumableMD5(ResumableHash):
    """
    MD5 over OpenSSL's C{MD5_CTX}.
    """

    algorithm = "md5"
    prefix = "MD5"
    words = 4


class ResumableSHA1(ResumableHash):
    """
    SHA-1 over OpenSSL's C{SHA_CTX}.
    """

    algorithm = "sha1"
    prefix = "SHA1"
    words = 5


#: The resumable hash of each algorithm.
RESUMABLE: dict[str, type[ResumableHash]] = {
    "sha256": ResumableSHA256,
    "md5": ResumableMD5,
    "sha1": ResumableSHA1,
}


@cache
def problem(algorithm: str = "sha256") -> str | None:
    """
    Check C{algorithm}'s L{ResumableHash} against C{hashlib} on inputs that
    cross block boundaries, through a save and a restore of its state at
    each step.

    @return: why its saved states cannot be used here, or L{None} if they
        can.
    """
    resumable = RESUMABLE[algorithm]
    try:
        chunks: list[bytes | bytearray] = [
            b"",
            b"a",
            b"b" * 55,
            b"c" * 64,
            b"d" * 1000,
            bytearray(b"e" * 63),
        ]
        hashed = resumable()
        reference = hashlib.new(algorithm, usedforsecurity=False)
        for chunk in chunks:
            hashed = resumable.fromState(hashed.state())
            hashed.update(chunk)
            reference.update(chunk)
            if hashed.digest() != reference.digest():
                return f"OpenSSL's {resumable.prefix} functions do not give hashlib's digest"
    except (OSError, AttributeError, ValueError, struct.error) as e:
        return f"OpenSSL's {resumable.prefix} functions are not usable ({e})"
    return None


def parseAlgorithms(text: str) -> tuple[str, ...]:
    """
    Parse the C{--hashes} option: algorithms, comma-separated.

    @return: the algorithms in L{ALGORITHMS}' order, SHA-256 always among
        them.
    @raise ValueError: for an unknown algorithm.
    """
    wanted = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = wanted - set(ALGORITHMS)
    if unknown:
        raise ValueError(
            f"unknown hash {', '.join(sorted(unknown))}; choose from {', '.join(ALGORITHMS)}"
        )
    return tuple(name for name in ALGORITHMS if name in wanted or name == "sha256")


class FileHashes:
    """
    The hashes of one file, updated together.

    Each is resumable where this machine's OpenSSL allows it (L{problem});
    L{state} is then a single value for all of them, restored by
    L{fromState}.

    @ivar algorithms: the algorithms, in L{ALGORITHMS}' order.
    """

    def __init__(self, algorithms: Iterable[str] = ("sha256",)) -> None:
        self.algorithms = tuple(name for name in ALGORITHMS if name in set(algorithms))
        self._hashes: dict[str, Any] = {
            name: RESUMABLE[name]()
            if problem(name) is None
            else hashlib.new(name, usedforsecurity=False)
            for name in self.algorithms
        }

    @property
    def resumable(self) -> bool:
        """
        Whether L{state} can be saved.
        """
        return all(isinstance(h, ResumableHash) for h in self._hashes.values())

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """
        Hash C{data} with each algorithm, after what was hashed so far.
        """
        for hashed in self._hashes.values():
            hashed.update(data)

    def digests(self) -> dict[str, bytes]:
        """
        @return: algorithm -> digest of what was hashed so far.
        """
        return {name: hashed.digest() for name, hashed in self._hashes.items()}

    def hexdigest(self, algorithm: str) -> str:
        """
        @return: C{algorithm}'s digest, in hexadecimal.
        """
        return str(self._hashes[algorithm].hexdigest())

    def states(self) -> dict[str, bytes]:
        """
        @return: algorithm -> saved state, of those that can be saved.
        """
        return {
            name: hashed.state()
            for name, hashed in self._hashes.items()
            if isinstance(hashed, ResumableHash)
        }

    def state(self) -> bytes | None:
        """
        @return: every algorithm's state in one value (SHA-256's own when
            it is the only one), or L{None} unless L{resumable}.
        """
        if not self.resumable:
            return None
        states = self.states()
        if tuple(states) == ("sha256",):
            return states["sha256"]
        return bytes([SET_VERSION]) + b"".join(
            bytes([ALGORITHMS.index(name), len(state)]) + state for name, state in states.items()
        )

    @classmethod
    def fromStates(cls, states: dict[str, bytes]) -> FileHashes:
        """
        @param states: algorithm -> saved state.
        @return: the hashes of those algorithms, going on from them.
        @raise ValueError: if a state is not one.
        """
        hashes = cls(states)
        for name in hashes.algorithms:
            hashes._hashes[name] = RESUMABLE[name].fromState(states[name])
        return hashes

    @classmethod
    def fromState(cls, state: bytes) -> FileHashes:
        """
        @param state: from L{state}.
        @return: the hashes it holds, going on from it.
        @raise ValueError: if C{state} is not one.
        """
        return cls.fromStates(splitState(state))


def splitState(state: bytes) -> dict[str, bytes]:
    """
    @param state: from L{FileHashes.state}.
    @return: algorithm -> that algorithm's state.
    @raise ValueError: if C{state} is not one.
    """
    if not state or state[0] == STATE_VERSION:
        return {"sha256": state}
    if state[0] != SET_VERSION:
        raise ValueError("not a saved hash state")
    states, at = {}, 1
    while at < len(state):
        if at + 2 > len(state) or state[at] >= len(ALGORITHMS):
            raise ValueError("a malformed saved hash state")
        name, size = ALGORITHMS[state[at]], state[at + 1]
        states[name] = state[at + 2 : at + 2 + size]
        at += 2 + size
    if at != len(state) or "sha256" not in states:
        raise ValueError("a malformed saved hash state")
    return states


#: The user metadata key of each algorithm's digest.
DIGEST_KEYS = {"sha256": "sha256", "md5": "md5chksum", "sha1": "sha1"}


def hashMetadata(hashes: FileHashes) -> dict[str, str]:
    """
    @return: the user metadata that keeps C{hashes}' digests and states.
    """
    metadata = {}
    for name, digest in hashes.digests().items():
        metadata[DIGEST_KEYS[name]] = (
            base64.b64encode(digest).decode("ascii") if name == "md5" else digest.hex()
        )
    for name, state in hashes.states().items():
        metadata[f"{name}-state"] = base64.b64encode(state).decode("ascii")
    return metadata


def storedDigests(metadata: dict[str, str]) -> dict[str, bytes]:
    """
    @param metadata: an object's user metadata.
    @return: algorithm -> digest of the digests it holds (a malformed one
        is left out).
    """
    digests = {}
    for name, key in DIGEST_KEYS.items():
        text = metadata.get(key, "")
        try:
            raw = base64.b64decode(text, validate=True) if name == "md5" else bytes.fromhex(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == DIGEST_SIZES[name]:
            digests[name] = raw
    return digests


def storedStates(metadata: dict[str, str], size: int) -> dict[str, bytes]:
    """
    @param metadata: an object's user metadata.
    @param size: the object's size.
    @return: algorithm -> saved state of the states it holds that restore
        and that hashed exactly C{size} bytes (a malformed one, or one
        copied from another object, is left out).
    """
    states = {}
    for name in ALGORITHMS:
        text = metadata.get(f"{name}-state")
        if text is None or problem(name) is not None:
            continue
        try:
            state = base64.b64decode(text, validate=True)
            restored = RESUMABLE[name].fromState(state)
        except (ValueError, binascii.Error):
            continue
        if restored.length == size:
            states[name] = state
    return states
