"""What a dispatcher's message tells the worker, and Flower, about the task it carries."""

from __future__ import annotations

from celery.utils.saferepr import saferepr

from core.context import RECORDED_CALLER_HEADER, REDISPATCH_HEADER
from core.dispatch import kwargs_repr, message_headers
from core.task_store import Dispatch
from workers.app import app


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


def test_the_kwargs_shown_for_a_published_task_read_as_celery_would_show_them():
    args = {"user_id": 7, "difficulty": "Easy", "topic": "graphs", "tags": [1, None, True]}
    limit = app.amqp.kwargsrepr_maxsize

    assert kwargs_repr(app, args) == saferepr(args, limit)
    # Long args are cut to Celery's limit, as Flower would show them.
    long_repr = kwargs_repr(app, {"note": "x" * (2 * limit)})
    assert len(long_repr) == limit and long_repr.endswith("...")
