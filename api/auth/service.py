"""User accounts: argon2 password hashes, creation, authentication, the bootstrap admin.

argon2 is slow on purpose (tens of milliseconds of CPU and memory per hash): every hash and
verification runs in a worker thread, so a login never stalls the other requests.
"""

from __future__ import annotations

import re

import anyio.to_thread
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


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
    user = UserRow(
        username=username, password_hash=await hash_password(password), is_admin=is_admin
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> UserRow | None:
    """The user when the password matches, else ``None`` (same cost either way)."""
    user = await session.scalar(select(UserRow).where(UserRow.username == username))
    stored = user.password_hash if user else _DUMMY_HASH
    if not await anyio.to_thread.run_sync(_matches, stored, password) or user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
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
