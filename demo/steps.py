"""Checks that scenarios use to fail loudly, with a message saying what was expected."""

from __future__ import annotations

from typing import Any


class DemoStepFailed(RuntimeError):
    """A demo step did not do what it should have."""


def expect(condition: bool, message: str, **seen: Any) -> None:
    """Raise DemoStepFailed(`message`, plus what was seen) unless `condition` holds."""
    if not condition:
        details = ", ".join(f"{key}={value!r}" for key, value in seen.items())
        raise DemoStepFailed(f"{message} ({details})" if details else message)


def succeeded(answer: dict[str, Any], step: str) -> Any:
    """The task's result, or a failed step naming what went wrong."""
    expect(answer["state"] == "SUCCESS", f"{step} succeeds", answer=answer)
    return answer["result"]
