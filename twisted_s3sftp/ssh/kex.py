"""
Finite-field Diffie-Hellman key exchanges that Twisted Conch lacks, for the
C{fips} and C{compat} crypto policies:

  - C{diffie-hellman-group14-sha256}, C{diffie-hellman-group16-sha512} and
    C{diffie-hellman-group18-sha512} (RFC 8268): the 2048-, 4096- and
    8192-bit MODP groups of RFC 3526 with SHA-2;
  - the same three groups as the moduli of C{diffie-hellman-group-exchange-
    sha256} (RFC 4419), which Conch implements but offers only with a
    moduli file.

The primes are computed from RFC 3526's definition,
M{p = 2^s - 2^(s-64) - 1 + 2^64 * ([2^(s-130) pi] + offset)}, with the
offsets it gives, and the generator 2; the tests check them against
Conch's own group 14 prime and for primality.

Conch looks key exchanges up in a private registry; L{registerKeyExchanges}
adds these to it, once, when the SSH factory is made.
"""

from __future__ import annotations

from functools import cache
from hashlib import sha256, sha512
from typing import Any

from twisted.conch.ssh import _kex
from zope.interface import implementer

#: RFC 3526's groups used here: bits -> offset.
MODP_OFFSETS = {2048: 124476, 4096: 240904, 8192: 4743158}

#: The generator of every RFC 3526 group.
GENERATOR = 2


def _arctanInverse(x: int, scale: int) -> int:
    """
    @return: M{arctan(1/x) * 2^scale}, truncated, by its Taylor series.
    """
    total = 0
    term = (1 << scale) // x
    k = 0
    square = x * x
    while term:
        total += term // (2 * k + 1) if k % 2 == 0 else -(term // (2 * k + 1))
        term //= square
        k += 1
    return total


@cache
def piScaled(bits: int) -> int:
    """
    @return: M{[2^bits pi]} (the integer part), from Machin's formula
        M{pi = 16 arctan(1/5) - 4 arctan(1/239)}, with guard bits.
    """
    guard = 64
    scale = bits + guard
    pi = 16 * _arctanInverse(5, scale) - 4 * _arctanInverse(239, scale)
    return pi >> guard


@cache
def modpPrime(bits: int) -> int:
    """
    @param bits: C{2048}, C{4096} or C{8192}.
    @return: the prime of RFC 3526's MODP group of that size.
    """
    offset = MODP_OFFSETS[bits]
    return (1 << bits) - (1 << (bits - 64)) - 1 + (1 << 64) * (piScaled(bits - 130) + offset)


@implementer(_kex._IFixedGroupKexAlgorithm)
class _FixedGroup:
    """
    A fixed-group Diffie-Hellman exchange, as Conch's registry describes one.
    """

    generator = GENERATOR

    def __init__(self, bits: int, hashProcessor: Any, preference: int) -> None:
        self.bits = bits
        self.hashProcessor = hashProcessor
        self.preference = preference

    @property
    def prime(self) -> int:
        return modpPrime(self.bits)


#: The fixed-group exchanges added: name -> (bits, hash).
FIXED_GROUPS = {
    b"diffie-hellman-group14-sha256": (2048, sha256),
    b"diffie-hellman-group16-sha512": (4096, sha512),
    b"diffie-hellman-group18-sha512": (8192, sha512),
}


def registerKeyExchanges() -> None:
    """
    Make the exchanges of L{FIXED_GROUPS} known to Conch (idempotent).
    """
    for preference, (name, (bits, digest)) in enumerate(FIXED_GROUPS.items(), 20):
        _kex._kexAlgorithms.setdefault(name, _FixedGroup(bits, digest, preference))


def moduli() -> dict[int, list[tuple[int, int]]]:
    """
    @return: the moduli offered for group exchange, as Conch's factory
        wants them (bits -> [(generator, prime)]).
    """
    return {bits: [(GENERATOR, modpPrime(bits))] for bits in MODP_OFFSETS}
