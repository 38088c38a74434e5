"""The fixed rules of peer matching that are not configuration."""

from __future__ import annotations

from typing import Literal

Difficulty = Literal["Easy", "Medium", "Hard"]

# Two users one of whom declined the other are not paired again for this long.
DECLINE_COOLDOWN_SECONDS = 3600

# A topic is a short label such as "dynamic-programming" or "C++".
TOPIC_MAX_LENGTH = 64
TOPIC_PATTERN = r"^\w[\w +#./-]*$"

# Every collaboration session starts in this language.
SESSION_LANGUAGE = "python"
