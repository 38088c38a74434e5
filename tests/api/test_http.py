"""The HTTP surface: catalogue, probes, OpenAPI, body limit, unknown routes, no traces."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from api.app import create_app
from tests.api.support import serving


def test_catalogue_lists_every_task_with_its_args_and_result_schemas(client: httpx.Client):
    response = client.get("/v1/tasks")
    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()}
    assert {"events.publish", "maintenance.reconcile"} <= set(tasks)
    publish = tasks["events.publish"]
    assert publish["description"] == (
        "Relay unpublished outbox events to the `matching.events` topic exchange."
    )
    assert publish["args_schema"]["type"] == "object"
    assert publish["args_schema"]["additionalProperties"] is False
    assert publish["result_schema"]["properties"] == {
        "published": {"title": "Published", "type": "integer"}
    }
    assert publish["result_schema"]["additionalProperties"] is False
    assert all(
        set(task) == {"name", "description", "args_schema", "result_schema"}
        for task in tasks.values()
    )


def test_healthz_needs_no_token(anonymous: httpx.Client):
    response = anonymous.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_answers_200_when_database_and_broker_answer(anonymous: httpx.Client):
    response = anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok"},
        "elsewhere": {},
    }


def test_openapi_documents_the_bearer_scheme(anonymous: httpx.Client):
    document = anonymous.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post = document["paths"]["/v1/tasks/{name}"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert {"200", "202", "401", "403", "404", "409", "413", "422", "503"} <= set(post["responses"])
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskStatus"
    }
    assert anonymous.get("/docs").status_code == 200


def test_body_over_64_kib_is_413(client: httpx.Client):
    response = client.post(
        "/v1/tasks/events.publish",
        content=b'{"args": {"pad": "' + b"x" * 70_000 + b'"}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "error": {"type": "payload_too_large", "message": "request body is larger than 64 KiB"}
    }


def test_streamed_body_over_64_kib_is_413_without_content_length(client: httpx.Client):
    def chunks():
        yield b'{"args": {"pad": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}}'

    response = client.post(
        "/v1/tasks/events.publish",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"


def test_unknown_route_is_json_404(anonymous: httpx.Client):
    response = anonymous.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "not_found", "message": "no route GET /v2/nothing"}
    }


def test_unexpected_error_is_500_without_a_trace(auth_env: None):
    app: FastAPI = create_app()

    @app.get("/explode")
    def explode() -> None:
        raise RuntimeError("secret internal detail")

    with serving(app) as url:
        response = httpx.get(f"{url}/explode")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"type": "internal_error", "message": "internal error; it has been logged"}
    }
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


# Every URL a docs page loads: scripts, stylesheets, icons and the OpenAPI document.
ASSET_REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")


def _referenced_assets(page: str) -> list[str]:
    return [first or second for first, second in ASSET_REFERENCE.findall(page)]


def test_docs_pages_load_every_asset_from_the_api_itself(anonymous: httpx.Client):
    for page_path in ("/docs", "/redoc"):
        page = anonymous.get(page_path)
        assert page.status_code == 200
        assets = _referenced_assets(page.text)
        assert any(asset.endswith(".js") for asset in assets), page.text
        assert "/openapi.json" in assets
        for asset in assets:
            assert asset.startswith("/"), f"{page_path} loads {asset} from elsewhere"
            fetched = anonymous.get(asset)
            assert fetched.status_code == 200, asset
            assert fetched.content, asset


def test_root_points_at_the_docs(anonymous: httpx.Client):
    response = anonymous.get("/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/docs"
