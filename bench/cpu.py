"""CPU time by part of a running stack, read from /proc (Linux), for a bench to say
where a workload's cycles go and how many of the machine's cores it keeps busy.

A part is a supervised child with everything it forked (its session: a worker's pool
processes count with it), the PostgreSQL backends serving the bench database, the Redis
server, or the bench process itself. A process that exits between two readings takes
its time with it, so readings are taken while the parts run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# /proc/PID/stat fields after the command name: state is the first, session the fourth,
# user and system time the twelfth and thirteenth.
SESSION_FIELD = 3
UTIME_FIELD = 11
STIME_FIELD = 12

BENCH = "bench (this process)"
POSTGRES = "PostgreSQL backends"
REDIS = "Redis"


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds used so far by each part, at one moment."""

    seconds: Mapping[str, float]

    def since(self, earlier: CpuReading) -> dict[str, float]:
        """CPU seconds each part used between `earlier` and this reading."""
        return {
            part: seconds - earlier.seconds.get(part, 0.0) for part, seconds in self.seconds.items()
        }


def read_cpu(sessions: Mapping[str, int], database: str | None = None) -> CpuReading:
    """CPU seconds so far of each named session (name -> session id), of PostgreSQL's
    backends connected to `database` (none without it), of Redis and of this process."""
    parts = {session: name for name, session in sessions.items()}
    own = os.getpid()
    seconds: defaultdict[str, float] = defaultdict(float)
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone since the listing
            continue
        # `PID (name) state ...`: the name may hold spaces and parentheses itself.
        name_end = stat.rfind(")")
        fields = stat[name_end + 2 :].split()
        used = (int(fields[UTIME_FIELD]) + int(fields[STIME_FIELD])) / TICKS_PER_SECOND
        if int(entry.name) == own:
            seconds[BENCH] += used
        elif (part := parts.get(int(fields[SESSION_FIELD]))) is not None:
            seconds[part] += used
        elif database and command.startswith("postgres:") and f" {database} " in command:
            seconds[POSTGRES] += used
        elif stat[stat.find("(") + 1 : name_end] == "redis-server":
            seconds[REDIS] += used
    return CpuReading(seconds)


def cpu_rows(
    used: Mapping[str, float], per: int, unit: str, elapsed: float
) -> list[tuple[str, str]]:
    """Report rows: each part's CPU in milliseconds per `unit` (of `per` units), the
    total, and how many cores that kept busy over `elapsed` seconds."""
    rows = [
        (f"CPU: {part}", f"{seconds * 1000 / per:,.2f} ms per {unit}")
        for part, seconds in sorted(used.items(), key=lambda item: -item[1])
        if seconds > 0
    ]
    total = sum(used.values())
    rows.append(("CPU: all parts", f"{total * 1000 / per:,.2f} ms per {unit}"))
    rows.append(
        ("cores kept busy", f"{total / elapsed:.2f} of {os.cpu_count()} (over {elapsed:.1f} s)")
    )
    return rows
