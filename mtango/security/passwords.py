"""Passwords are kept only as salted slow hashes: argon2id (argon2-cffi, RFC 9106 parameters).

Checking one takes tens of milliseconds of CPU by design (that is what makes a stolen users file
expensive to attack), so ``mtango.security.access`` checks them in a thread, never on the event
loop, and remembers a successful check for a while (HTTP Basic sends the password with every
request).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` with a random salt (``$argon2id$v=19$...``)."""
    return _HASHER.hash(password)


def verify(hashed: str, password: str) -> bool:
    """Whether ``password`` matches ``hashed`` (False for a wrong password or a broken hash)."""
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def is_hash(text: str) -> bool:
    """Whether ``text`` looks like a hash this module makes (a users file must not hold plain
    passwords)."""
    return text.startswith("$argon2")
