"""Values PostgreSQL cannot store as given: NUL characters and integers beyond bigint."""

from __future__ import annotations

from typing import Any

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1


def unstorable_values(value: Any, path: str = "") -> list[str]:
    """`field: why` for every string holding a NUL character and every integer outside
    PostgreSQL's bigint, anywhere in a JSON value (keys included)."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                problems.append(f"{where!r}: field names must not contain NUL characters")
            problems.extend(unstorable_values(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(unstorable_values(item, f"{path}.{index}" if path else str(index)))
    elif isinstance(value, str) and "\x00" in value:
        problems.append(f"{path or 'value'}: must not contain NUL characters (\\u0000)")
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not BIGINT_MIN <= value <= BIGINT_MAX
    ):
        problems.append(
            f"{path or 'value'}: {value} is out of range; integers must lie between "
            f"{BIGINT_MIN} and {BIGINT_MAX}"
        )
    return problems
