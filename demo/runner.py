"""Runs the demo scenarios in order against a running stack and reports on them.

A scenario is a module exposing `run(client: ApiClient) -> dict[str, Any]`: it drives
the stack through the HTTP API (seeding rows of sibling services directly in
PostgreSQL where it needs them, via `core.db`), returns a short summary, and raises on
anything unexpected. Scenarios must not assume an empty database: the local stack keeps
its data between runs, so each one creates its own users, topics and groups.
"""

from __future__ import annotations

import importlib
import json
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from demo.client import ApiClient
from domain.peer.stats import PoolFigures
from runtime.pool_table import pool_table

SCENARIOS: tuple[str, ...] = ("demo.platform", "demo.carpool", "demo.peer", "demo.mentorship")


@dataclass
class ScenarioOutcome:
    """How one scenario went."""

    name: str
    seconds: float
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class DemoReport:
    """Every scenario's outcome and the events relayed while they ran."""

    outcomes: list[ScenarioOutcome] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    events_error: str | None = None
    pools: list[PoolFigures] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.events_error is None and all(outcome.ok for outcome in self.outcomes)

    @property
    def verdict(self) -> str:
        failed = [outcome.name for outcome in self.outcomes if not outcome.ok]
        if self.events_error:
            failed.append("events")
        return "all steps passed" if not failed else f"FAILED: {', '.join(failed)}"


def run_scenario(name: str, client: ApiClient) -> ScenarioOutcome:
    """Import and run one scenario module; an exception becomes a failed outcome."""
    started = time.monotonic()
    try:
        summary = importlib.import_module(name).run(client)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return ScenarioOutcome(name, time.monotonic() - started, error=detail)
    return ScenarioOutcome(name, time.monotonic() - started, summary=summary)


def run_demo_scenarios(client: ApiClient, scenarios: tuple[str, ...] = SCENARIOS) -> DemoReport:
    """Run `scenarios` in order (one failing does not stop the rest), counting events."""
    from demo.events import EventTap, relay_and_count

    report = DemoReport()
    with EventTap() as tap:
        for name in scenarios:
            report.outcomes.append(run_scenario(name, client))
        try:
            report.events = relay_and_count(client, tap)
        except Exception as exc:
            report.events_error = "".join(traceback.format_exception_only(type(exc), exc))
    report.pools = read_pool_figures()
    return report


def read_pool_figures() -> list[PoolFigures]:
    """The peer pools' fairness figures after the scenarios (the last hour's)."""
    from core.db import session_factory
    from domain.peer.stats import pool_figures

    with session_factory().begin() as session:
        return pool_figures(session)


def print_report(report: DemoReport) -> None:
    """A readable summary: one block per scenario, then the events by type."""
    for outcome in report.outcomes:
        mark = "ok" if outcome.ok else "FAILED"
        print(f"\n[{mark}] {outcome.name} ({outcome.seconds:.1f}s)")
        if outcome.summary is not None:
            for key, value in outcome.summary.items():
                print(f"    {key}: {json.dumps(value, default=str)}")
        if outcome.error is not None:
            print(f"    error: {outcome.error}")
    print("\n[events] relayed to matching.events during the demo, by type:")
    if report.events_error:
        print(f"    FAILED: {report.events_error.strip()}")
    for event_type, count in report.events.items():
        print(f"    {event_type}: {count}")
    if not report.events and not report.events_error:
        print("    (none)")
    print("\n[pools] peer pools: waiting now; matched and expired in the last hour:")
    if report.pools:
        print(textwrap.indent(pool_table(report.pools), "    "))
    else:
        print("    (none)")
