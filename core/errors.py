"""Typed domain errors. Each carries the HTTP status the API reports for it.

They are never retried, and they survive the JSON result backend: Celery stores the
class name, module and message, and rebuilds the instance on the reading side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class DomainError(Exception):
    """A request the domain refuses. Subclasses fix the HTTP status."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        # Flower shows a failed task's exception as its repr: type, message and status.
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class MatchingError(DomainError):
    """The request breaks a matching rule (400)."""

    status = 400


class Forbidden(DomainError):
    """The caller is not allowed to act on this object (403)."""

    status = 403


class NotFound(DomainError):
    """The object named by the arguments does not exist (404)."""

    status = 404


class Conflict(DomainError):
    """The object is not in a state that allows the change (409)."""

    status = 409


class Invalid(DomainError):
    """The call does not fit: its args break the task's schema, or its countdown or wait
    is out of bounds (422)."""

    status = 422


class Overloaded(DomainError):
    """The task's queue is too far behind to promise the work in time; nothing was
    recorded, and the caller may try again after `retry_after` seconds (429)."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A part the call needs (the database, the broker, the result backend) does not
    answer; nothing was changed (503)."""

    status = 503


def unreachable(component: str) -> Unavailable:
    """The refusal naming the part that did not answer; details stay in the server log."""
    return Unavailable(f"the {component} is unreachable; nothing was changed, try again later")


def describe_field_errors(errors: Iterable[Mapping[str, Any]], prefix: Sequence[str] = ()) -> str:
    """Pydantic errors as `field: why; field: why`, fields dotted from `prefix`."""
    parts = []
    for error in errors:
        loc = [*prefix, *(str(part) for part in error.get("loc", ()))]
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "not valid JSON")
            parts.append(f"body: invalid JSON ({reason})")
            continue
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not fit the schema"


DOMAIN_ERRORS: dict[str, type[DomainError]] = {
    cls.__name__: cls for cls in (DomainError, MatchingError, Forbidden, NotFound, Conflict)
}


def status_of(type_name: str) -> int | None:
    """HTTP status for a stored error type name, or None when it is not a domain error."""
    cls = DOMAIN_ERRORS.get(type_name)
    return cls.status if cls else None


class GaveUp(Exception):
    """A task was delivered too often without an outcome (it keeps killing its worker,
    or keeps failing transiently); it ends as FAILURE instead of running again."""


class PreviousFailure(Exception):
    """A later delivery of a task whose first run failed with an unexpected error."""


MAX_ERROR_MESSAGE = 500


def describe_failure(error: BaseException) -> dict[str, object]:
    """`{"type", "message", "status"}` of a failed task, without any traceback.

    Domain errors keep their HTTP status; anything else is a 500.
    """
    type_name = type(error).__name__
    status = error.status if isinstance(error, DomainError) else 500
    message = str(error).strip()
    first_line = message.splitlines()[0] if message else ""
    return {
        "type": type_name,
        "message": first_line[:MAX_ERROR_MESSAGE] or f"{type_name} (details in the worker log)",
        "status": status,
    }


def rebuild_failure(error: dict[str, object]) -> Exception:
    """The exception to raise again for a recorded failure: the same domain error class
    and message, else a GaveUp or a PreviousFailure naming the original type."""
    type_name, message = str(error.get("type", "")), str(error.get("message", ""))
    domain = DOMAIN_ERRORS.get(type_name)
    if domain is not None:
        return domain(message)
    if type_name == GaveUp.__name__:
        return GaveUp(message)
    return PreviousFailure(f"{type_name}: {message}")
