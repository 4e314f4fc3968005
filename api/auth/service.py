"""User accounts: argon2 password hashes, creation, authentication, the bootstrap admin."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aideploy.errors import InputError
from aideploy.settings import Settings
from api.db.tables import UserRow

_hasher = PasswordHasher()
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_MIN_PASSWORD = 8
# Verifying against this keeps unknown usernames as slow as wrong passwords (no user probing).
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class UserExistsError(InputError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_new_credentials(username: str, password: str) -> None:
    if not _USERNAME.match(username):
        raise InputError(
            "username: must be 1-128 letters, digits or '_.@-', starting with a letter or digit"
        )
    if len(password) < _MIN_PASSWORD:
        raise InputError(f"password: must be at least {_MIN_PASSWORD} characters")


async def create_user(
    session: AsyncSession, username: str, password: str, *, is_admin: bool = False
) -> UserRow:
    check_new_credentials(username, password)
    if await session.scalar(select(UserRow.id).where(UserRow.username == username)):
        raise UserExistsError(f"username: user {username!r} already exists")
    user = UserRow(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> UserRow | None:
    """The user when the password matches, else ``None`` (same cost either way)."""
    user = await session.scalar(select(UserRow).where(UserRow.username == username))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


async def bootstrap_admin(session: AsyncSession, settings: Settings) -> None:
    """Create the admin named in the settings if it does not exist yet (never overwrites)."""
    if not settings.admin_username or settings.admin_password is None:
        return
    exists = await session.scalar(
        select(UserRow.id).where(UserRow.username == settings.admin_username)
    )
    if not exists:
        await create_user(
            session,
            settings.admin_username,
            settings.admin_password.get_secret_value(),
            is_admin=True,
        )
