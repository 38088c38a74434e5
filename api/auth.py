"""Bearer tokens: HS256 JWTs with `sub`, `exp` and `scope` (task-name patterns)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError

ALGORITHM = "HS256"
# The scope that lets a caller read tasks it did not enqueue.
READ_ALL_SCOPE = "tasks:read"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description=(
        "A JWT signed HS256 with AUTH_SECRET, claims `sub`, `exp` and `scope` "
        "(task-name patterns such as `peer.*` or `*`). `matchops token` prints one."
    ),
)


@dataclass(frozen=True)
class Caller:
    """Who is calling and which tasks they may enqueue."""

    sub: str
    scopes: tuple[str, ...]

    def may_use(self, task_name: str) -> bool:
        """Whether one of the token's patterns covers `task_name`."""
        return any(fnmatchcase(task_name, pattern) for pattern in self.scopes)


def issue_token(secret: str, sub: str, scopes: list[str], ttl_seconds: int) -> str:
    """A signed token for `sub` that may enqueue tasks matching `scopes`, valid `ttl_seconds`."""
    now = int(time.time())
    claims = {"sub": sub, "scope": list(scopes), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str, max_ttl_seconds: int) -> Caller:
    """The caller a token names; 401 when it is expired, forged, malformed, or lives
    longer than `max_ttl_seconds` from now (a leaked long-lived token is a standing key)."""
    caller, expires = _verified(secret, token, max_ttl_seconds)
    if expires <= time.time():
        raise ApiError(
            401, "unauthorized", "the token has expired; ask for a new one (matchops token)"
        )
    return caller


# A service sends the same token with every call: its signature, the dearest part of
# authenticating, is checked once, and only its expiry on every later call.
@lru_cache(maxsize=4096)
def _verified(secret: str, token: str, max_ttl_seconds: int) -> tuple[Caller, float]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(
            401, "unauthorized", "the token has expired; ask for a new one (matchops token)"
        ) from None
    except jwt.InvalidSignatureError:
        raise ApiError(
            401, "unauthorized", "invalid token: it is not signed with this API's secret"
        ) from None
    except jwt.MissingRequiredClaimError as missing:
        raise ApiError(
            401, "unauthorized", f"invalid token: the claim `{missing.claim}` is missing"
        ) from None
    except jwt.InvalidTokenError:
        # The decoder's own message describes its internals, not what the caller can do.
        raise ApiError(
            401,
            "unauthorized",
            "invalid token: not a JWT signed HS256; ask for a new one (matchops token)",
        ) from None
    if int(claims["exp"]) - time.time() > max_ttl_seconds:
        raise ApiError(
            401,
            "unauthorized",
            f"the token is valid for longer than {max_ttl_seconds} seconds "
            "(MAX_TOKEN_TTL_SECONDS); ask for a shorter-lived one (matchops token --ttl)",
        )
    scope = claims.get("scope", [])
    if not isinstance(scope, list) or not all(isinstance(p, str) for p in scope):
        raise ApiError(
            401, "unauthorized", "invalid token: `scope` must be a list of task-name patterns"
        )
    return Caller(sub=str(claims["sub"]), scopes=tuple(scope)), float(claims["exp"])


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """FastAPI dependency: the caller of a /v1 route, or 401.

    Checking a signature takes microseconds: it runs on the event loop, not in a thread.
    """
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing token: send `Authorization: Bearer <token>`")
    secret: str = request.app.state.auth_secret
    max_ttl: int = request.app.state.max_token_ttl
    return decode_token(secret, credentials.credentials, max_ttl)


def may_read_every_task(caller: Caller) -> bool:
    """Whether the token's scope covers `tasks:read`: every task, not only its own."""
    return caller.may_use(READ_ALL_SCOPE)


def require_scope(caller: Caller, task_name: str) -> None:
    """403 unless the caller's token covers `task_name`."""
    if not caller.may_use(task_name):
        patterns = ", ".join(caller.scopes) or "none"
        raise ApiError(
            403,
            "forbidden",
            f"task {task_name!r} is outside this token's scope (scope: {patterns})",
        )


CurrentCaller = Annotated[Caller, Depends(authenticate)]
