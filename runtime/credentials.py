"""Secrets of the local stack: `make run` / `make demo` generate what is not configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from runtime.embedded import DEFAULT_HOME

# Kept across runs so that a token printed by one `make run` still works after a restart.
AUTH_SECRET_FILE = "auth-secret"
FLOWER_USER = "admin"


def local_auth_secret(home: Path = DEFAULT_HOME, create: bool = False) -> str | None:
    """The local stack's token-signing secret, created (0600) when `create` and missing."""
    path = home / AUTH_SECRET_FILE
    if path.exists():
        return path.read_text().strip() or None
    if not create:
        return None
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return secret


def ensure_local_secrets(home: Path = DEFAULT_HOME) -> dict[str, str]:
    """Export AUTH_SECRET and FLOWER_BASIC_AUTH unless set; returns the ones generated."""
    generated: dict[str, str] = {}
    if not os.environ.get("AUTH_SECRET"):
        secret = local_auth_secret(home, create=True)
        assert secret is not None
        os.environ["AUTH_SECRET"] = generated["AUTH_SECRET"] = secret
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        # A fresh password per run: it is printed with Flower's URL.
        credentials = f"{FLOWER_USER}:{secrets.token_urlsafe(12)}"
        os.environ["FLOWER_BASIC_AUTH"] = generated["FLOWER_BASIC_AUTH"] = credentials
    return generated


def parse_basic_auth(value: str) -> tuple[str, str]:
    """`user:password` → (user, password); ValueError saying what is wrong otherwise."""
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise ValueError("FLOWER_BASIC_AUTH must look like user:password (both non-empty)")
    return user, password
