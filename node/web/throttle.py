"""Sign-in that a flood cannot exhaust: failed attempts bounded per client and per account, verified HTTP Basic
credentials remembered briefly, and Argon2id work bounded.

Every Basic request would otherwise run Argon2id (tens of milliseconds of a core and 64 MiB, by design):
256 random credentials, 64 at a time, saturated the machine for 44 s (#27). So:

- :meth:`SignInGuard.retry_after` says how long a client (by address) or an account (by name) must wait after
  ``max_failures`` failed attempts within ``window_s`` — answered 429 with ``Retry-After`` before any hashing,
  and asked again once a hashing slot is held, so a flood queued for the slot is turned away too;
- :meth:`SignInGuard.remembered` knows credentials verified within ``cache_s``, keyed by a keyed hash
  (HMAC-SHA-256 under a per-process secret: the password is never kept) together with the account's password
  hash at the time, so a new password or a disabled account is never let in by the cache;
- :meth:`SignInGuard.hashing` lets ``hash_slots`` verifications run at once (one core on a two-core node:
  the DICOM listener and the indexer keep theirs); a request that waits longer than ``wait_s`` is turned away.

State is per process and bounded (``MAX_TRACKED`` clients and accounts, the oldest forgotten first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager

MAX_TRACKED = 10_000


class Busy(Exception):
    """No Argon2id slot came free in time."""


class Throttled(Exception):
    """Too many failed sign-ins from this client or on this account: wait ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class SignInGuard:
    """Failed sign-ins counted per client and account, verified credentials remembered (thread-safe)."""

    def __init__(self, *, max_failures: int = 10, window_s: float = 300.0, cache_s: float = 60.0,
                 hash_slots: int = 1, wait_s: float = 5.0) -> None:
        self.max_failures, self.window_s, self.cache_s, self.wait_s = max_failures, window_s, cache_s, wait_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._verified: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(hash_slots)

    def retry_after(self, client: str, name: str | None) -> int | None:
        """Seconds the client or the account must wait after ``max_failures`` failures within ``window_s``;
        None when it may try now. Asked again inside the hashing slot (:func:`node.web.accounts.authenticate`),
        so that concurrent attempts queued for the slot see the failures of those before them."""
        now = time.monotonic()
        with self._lock:
            waits = [w for w in (self._wait(key, now) for key in self._keys(client, name)) if w is not None]
        return max(1, int(max(waits) + 0.999)) if waits else None

    def failed(self, client: str, name: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            for key in self._keys(client, name):
                attempts = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
                attempts.append(now)
                self._failures[key] = attempts
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, client: str, name: str) -> None:
        with self._lock:
            self._failures.pop(f"client:{client}", None)
            self._failures.pop(f"account:{name}", None)

    def remembered(self, name: str, password: str, password_hash_now: str) -> bool:
        """True when ``name``/``password`` were verified within ``cache_s`` against the same password hash."""
        key = self._key(name, password)
        with self._lock:
            entry = self._verified.get(key)
        return (entry is not None and entry[0] == name and entry[1] == password_hash_now
                and time.monotonic() < entry[2])

    def remember(self, name: str, password: str, password_hash: str) -> None:
        with self._lock:
            self._verified[self._key(name, password)] = (name, password_hash, time.monotonic() + self.cache_s)
            while len(self._verified) > MAX_TRACKED:
                self._verified.popitem(last=False)

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """One of the ``hash_slots`` for an Argon2id verification; :class:`Busy` after ``wait_s``."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise Busy("sign-in is busy: try again in a few seconds")
        try:
            yield
        finally:
            self._slots.release()

    def _key(self, name: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    @staticmethod
    def _keys(client: str, name: str | None) -> list[str]:
        return [f"client:{client}", *([f"account:{name}"] if name else [])]

    def _wait(self, key: str, now: float) -> float | None:
        attempts = self._failures.get(key)
        if not attempts or len(attempts) < self.max_failures:
            return None
        wait = attempts[0] + self.window_s - now  # the oldest of the last max_failures leaves the window
        return wait if wait > 0 else None
