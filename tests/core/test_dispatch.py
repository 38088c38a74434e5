"""What a dispatcher's message tells the worker about the task it carries."""

from __future__ import annotations

from core.context import RECORDED_CALLER_HEADER, REDISPATCH_HEADER
from core.dispatch import message_headers
from core.task_store import Dispatch


def test_a_first_publish_names_the_recorded_caller_and_a_redispatch_says_it_is_one():
    fresh = Dispatch("t-1", "peer.request", {"user_id": 1}, "mentoring-app")
    again = Dispatch("t-1", "peer.request", {"user_id": 1}, "mentoring-app", again=True)

    # A first publish lets the delivery count itself with its outcome; a redispatch,
    # which may follow a delivery that died mid-way, has it counted first.
    assert message_headers(fresh) == {RECORDED_CALLER_HEADER: "mentoring-app"}
    assert message_headers(again) == {
        RECORDED_CALLER_HEADER: "mentoring-app",
        REDISPATCH_HEADER: True,
    }
