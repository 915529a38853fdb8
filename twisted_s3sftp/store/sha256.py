"""
A SHA-256 whose running state can be saved and restored (L{ResumableSHA256}):
what an upload resumed in another process needs to go on hashing the file
where the first one stopped.

CPython's C{hashlib} cannot export its state.  OpenSSL's low-level API can:
C{SHA256_Init}, C{SHA256_Update} and C{SHA256_Final} work on a plain
C{SHA256_CTX} whose layout is public (C{<openssl/sha.h>}: eight 32-bit
words of chaining value, the bit count in two words, the pending block of
64 bytes, its length and the digest length).  It is called here through
C{ctypes}, which releases the GIL for each call, as C{hashlib} does for large
buffers, and runs at C{hashlib}'s speed (research/resume.md, section 3.2).

That API is deprecated in OpenSSL 3 and may be missing from a build made
without it, so L{problem} checks it against C{hashlib} on known inputs,
through a save and a restore, before anything relies on it; when it fails,
nothing may store or trust a saved state, and the caller says so.

L{ResumableSHA256.state} is portable: the chaining value and the bit count
big-endian, then the pending bytes, so a state saved on one machine
restores on another whatever its byte order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
from functools import cache
from typing import Any

#: The version byte that starts every saved state.
STATE_VERSION = 1

#: The most bytes a saved state takes: version, chaining value, bit count,
#: and up to 63 pending bytes.
MAX_STATE = 1 + 32 + 8 + 63


class _Context(ctypes.Structure):
    """
    OpenSSL's C{SHA256_CTX}.
    """

    _fields_ = [
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


@cache
def _library() -> Any:
    """
    @return: libcrypto, with the SHA-256 functions typed.
    @raise OSError: if it or they cannot be found.
    """
    name = ctypes.util.find_library("crypto")
    if name is None:
        raise OSError("libcrypto not found")
    library = ctypes.CDLL(name)
    for function in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
        if not hasattr(library, function):
            raise OSError(f"libcrypto has no {function}")
    library.SHA256_Init.argtypes = [ctypes.POINTER(_Context)]
    library.SHA256_Init.restype = ctypes.c_int
    library.SHA256_Update.argtypes = [ctypes.POINTER(_Context), ctypes.c_void_p, ctypes.c_size_t]
    library.SHA256_Update.restype = ctypes.c_int
    library.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Context)]
    library.SHA256_Final.restype = ctypes.c_int
    return library


class ResumableSHA256:
    """
    SHA-256 over OpenSSL's C{SHA256_CTX}, with L{state} and L{fromState}.

    Use it only once L{problem} has returned L{None}.
    """

    def __init__(self) -> None:
        self._library = _library()
        self._context = _Context()
        self._library.SHA256_Init(ctypes.byref(self._context))

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
        self._library.SHA256_Update(ctypes.byref(self._context), pointer, size)

    def digest(self) -> bytes:
        """
        @return: the digest of what was hashed; the state is unchanged.
        """
        copy = _Context.from_buffer_copy(self._context)
        out = ctypes.create_string_buffer(32)
        self._library.SHA256_Final(out, ctypes.byref(copy))
        return out.raw

    def hexdigest(self) -> str:
        """
        @return: L{digest}, in hexadecimal.
        """
        return self.digest().hex()

    def state(self) -> bytes:
        """
        @return: the running state, portable (see the module docstring), at
            most L{MAX_STATE} bytes.
        """
        context = self._context
        pending = bytes(context.data)[: context.num]
        bits = (context.Nh << 32) | context.Nl
        return struct.pack(">B8IQ", STATE_VERSION, *context.h, bits) + pending

    @classmethod
    def fromState(cls, state: bytes) -> ResumableSHA256:
        """
        @param state: from L{state}.
        @return: a hash that goes on from it.
        @raise ValueError: if C{state} is not one.
        """
        head = struct.calcsize(">B8IQ")
        if not head <= len(state) < head + 64 or state[0] != STATE_VERSION:
            raise ValueError("not a saved SHA-256 state")
        _, *words, bits = struct.unpack(">B8IQ", state[:head])
        pending = state[head:]
        if bits % 8 or (bits // 8) % 64 != len(pending):
            raise ValueError("an inconsistent SHA-256 state")
        hashed = cls()
        context = hashed._context
        context.h = (ctypes.c_uint32 * 8)(*words)
        context.Nl = bits & 0xFFFFFFFF
        context.Nh = bits >> 32
        ctypes.memmove(context.data, pending, len(pending))
        context.num = len(pending)
        context.md_len = 32
        return hashed


@cache
def problem() -> str | None:
    """
    Check L{ResumableSHA256} against C{hashlib} on inputs that cross block
    boundaries, through a save and a restore of its state at each step.

    @return: why saved states cannot be used here, or L{None} if they can.
    """
    try:
        chunks: list[bytes | bytearray] = [
            b"",
            b"a",
            b"b" * 55,
            b"c" * 64,
            b"d" * 1000,
            bytearray(b"e" * 63),
        ]
        hashed = ResumableSHA256()
        reference = hashlib.sha256()
        for chunk in chunks:
            hashed = ResumableSHA256.fromState(hashed.state())
            hashed.update(chunk)
            reference.update(chunk)
            if hashed.digest() != reference.digest():
                return "OpenSSL's SHA256_CTX does not give hashlib's digest"
    except (OSError, AttributeError, ValueError, struct.error) as e:
        return f"OpenSSL's SHA-256 functions are not usable ({e})"
    return None
