"""Related limits are checked against each other when the settings are read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_a_hard_time_limit_at_or_above_the_redispatch_wait_is_refused_naming_both():
    with pytest.raises(ValidationError) as refused:
        Settings(task_soft_time_limit=100, task_time_limit=300, redispatch_after_seconds=300)
    message = str(refused.value)
    assert "REDISPATCH_AFTER_SECONDS (300) must be above TASK_TIME_LIMIT (300)" in message


def test_a_hard_time_limit_below_the_redispatch_wait_is_accepted():
    settings = Settings(task_soft_time_limit=100, task_time_limit=299, redispatch_after_seconds=300)
    assert settings.task_time_limit < settings.redispatch_after_seconds
