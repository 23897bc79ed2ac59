"""The page's admin password: a PBKDF2 hash that bookworm's Werkzeug 2.2 can verify.

Werkzeug 3 defaults to scrypt, which 2.2 cannot read, so the method is pinned.
"""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

METHOD = "pbkdf2:sha256:260000"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=METHOD, salt_length=16)


def check_password(stored: str | None, password: str) -> bool:
    return bool(stored) and check_password_hash(stored, password)
