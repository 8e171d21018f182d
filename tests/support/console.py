"""Signing in to the web console as a browser does: the sign-in form's CSRF token, then the form posted back."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token a console page carries in its forms."""
    token = CSRF_FIELD.search(page)
    assert token, page[:500]
    return token.group(1)


def post_login(client: httpx.Client, name: str, password: str, headers: dict[str, str] | None = None
               ) -> httpx.Response:
    """The sign-in form first (its CSRF token), then the form posted back with ``name`` and ``password``."""
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "next": "/", "csrf": token},
                       headers=headers)


def wait_for_web(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until ``base``/healthz answers 200; the end of ``log`` in the error when ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.3)
