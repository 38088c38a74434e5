"""The base of every task result shape.

Results are TypedDicts: the domain builds them as plain dicts, and the dicts are
what the ledger and the result backend store, so typing them changes no value a
task returns. pydantic reads a TypedDict like a model, so the task base publishes
and checks a result shape through `TypeAdapter` just as it does an args model.

Each shape is declared beside the domain function that builds the result, or whose
outcome the task puts in it (`peer.sweep`, `events.publish`); that function and the
task are annotated with it, so mypy checks every dict built on the way against the
shape `GET /v1/tasks` publishes.
"""

from __future__ import annotations

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12


# The config is inherited by every subclass: a key a shape does not name is an error
# when a result is validated, and `additionalProperties: false` in its JSON schema.
@with_config(ConfigDict(extra="forbid"))
class TaskResult(TypedDict):
    """Base of every task's result shape: only the keys it names."""
