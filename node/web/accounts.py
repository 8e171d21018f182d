"""Accounts of the console and DICOMweb, and the audit log of every state-changing action.

Passwords are kept as Argon2id hashes (argon2-cffi, the maintained implementation of the
password-hashing competition's winner), re-hashed on login when its parameters change.
Names are short and plain (letters, digits, ``._@-``); a password has at least 10 characters.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.web.throttle import SignInGuard, Throttled
from storage import models as m

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()
# Verified against when a name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(ValueError):
    """A bad account name, password or role, or a name that exists already or does not."""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def add_user(s: Session, *, name: str, password: str, role: m.Role) -> m.User:
    """A new account; raises :class:`AccountError` saying what is wrong."""
    if not NAME_PATTERN.match(name):
        raise AccountError(f"account name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    _check_password(password)
    if s.scalars(select(m.User).where(m.User.name == name)).one_or_none() is not None:
        raise AccountError(f"account {name!r} exists already")
    user = m.User(name=name, password_hash=_hasher.hash(password), role=role)
    s.add(user)
    s.flush()
    return user


def set_password(s: Session, *, name: str, password: str) -> m.User:
    """A new password; every session of the account ends."""
    user = get_user(s, name)
    _check_password(password)
    user.password_hash = _hasher.hash(password)
    user.session_generation += 1
    return user


def disable(s: Session, name: str) -> m.User:
    """The account may no longer sign in; every session of it ends."""
    user = get_user(s, name)
    user.disabled = True
    user.session_generation += 1
    return user


def end_sessions(s: Session, user_id: int) -> None:
    """Every session of the account ends (signing out ends them all: one generation per account)."""
    user = s.get(m.User, user_id)
    if user is not None:
        user.session_generation += 1


def get_user(s: Session, name: str) -> m.User:
    user = s.scalars(select(m.User).where(m.User.name == name)).one_or_none()
    if user is None:
        raise AccountError(f"no account {name!r}")
    return user


def authenticate(s: Session, name: str, password: str, guard: SignInGuard | None = None,
                 client: str = "-") -> m.User | None:
    """The enabled account ``name`` if ``password`` is its password, else None (same time either way).

    With a ``guard`` (the web's): credentials it verified moments ago against the same password hash are not
    hashed again; the Argon2id work waits for one of its slots (:class:`node.web.throttle.Busy` when none
    comes), and inside it the client's and the account's failures are looked at again
    (:class:`node.web.throttle.Throttled`) and a failure recorded."""
    user = s.scalars(select(m.User).where(m.User.name == name)).one_or_none()
    if guard is None:
        verified = _verify(user, password)
    elif user is not None and guard.remembered(name, password, user.password_hash):
        verified = True
    else:
        with guard.hashing():
            if user is not None and guard.remembered(name, password, user.password_hash):
                verified = True  # another request verified them while this one waited
            else:
                wait = guard.retry_after(client, name)
                if wait is not None:
                    raise Throttled(wait)
                verified = _verify(user, password)
                if not verified:
                    guard.failed(client, name)
    if not verified or user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = datetime.now(UTC)
    if guard is not None:
        guard.remember(name, password, user.password_hash)
    return user


def _verify(user: m.User | None, password: str) -> bool:
    try:
        _hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return user is not None


def audit(s: Session, *, actor: str, action: str, target: str | None = None, detail: str | None = None,
          remote: str | None = None) -> m.AuditEvent:
    """Record who did what (in the caller's transaction: the action and its record commit together)."""
    event = m.AuditEvent(actor=actor[:64], action=action[:64], target=target and target[:255], detail=detail,
                         remote=remote and remote[:64])
    s.add(event)
    return event
