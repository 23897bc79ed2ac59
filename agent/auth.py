"""The page's admin password and the revocation of its sessions.

The password is a PBKDF2 hash that bookworm's Werkzeug 2.2 can verify:
Werkzeug 3 defaults to scrypt, which 2.2 cannot read, so the method is
pinned. A session of the page is tied to the password hash and to a
generation number, both in the settings table: a new password (each hash
has a fresh salt, even for the same password) or a logout, which raises
the generation, ends every session opened before.
"""

from __future__ import annotations

import hashlib

from werkzeug.security import check_password_hash, generate_password_hash

from .store import settings
from .config import Config
from .store.db import database

METHOD = "pbkdf2:sha256:260000"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=METHOD, salt_length=16)


def check_password(stored: str | None, password: str) -> bool:
    return bool(stored) and check_password_hash(stored or "", password)


def session_tag(config: Config) -> str:
    """What a live session of the page carries: it changes with the password
    and with every revocation. The hash itself never goes in the cookie."""
    material = f"{settings.get(config, 'password_hash') or ''}\n{settings.get(config, 'session_generation')}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def revoke_sessions(config: Config) -> None:
    """End every session of the page: their cookies, copies included, stop working."""
    with database.obj.atomic("IMMEDIATE"):  # two logouts at once both count
        settings.put(session_generation=settings.get(config, "session_generation") + 1)
