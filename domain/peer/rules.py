"""The fixed rules of peer matching that are not configuration."""

from __future__ import annotations

from typing import Literal, get_args

Difficulty = Literal["Easy", "Medium", "Hard"]
# Easiest first: neighbours on this ladder are the adjacent difficulties relaxation joins.
DIFFICULTY_LADDER: tuple[str, ...] = get_args(Difficulty)

# Two users one of whom declined the other are not paired again for this long.
DECLINE_COOLDOWN_SECONDS = 3600

# A topic is a short label such as "dynamic-programming" or "C++".
TOPIC_MAX_LENGTH = 64
TOPIC_PATTERN = r"^\w[\w +#./-]*$"

# Every collaboration session starts in this language.
SESSION_LANGUAGE = "python"
