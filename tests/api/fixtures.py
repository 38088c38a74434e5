"""The API served by a real uvicorn, with AUTH_SECRET set for the session.

Loaded for every test package (tests/conftest.py), so tests of the workers can read
what a task did through the API as a caller would.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from core.settings import get_settings
from tests.api.support import SECRET, client_for, serving


@pytest.fixture(scope="session")
def auth_env(database: str) -> Iterator[None]:
    """AUTH_SECRET in the environment and a settings object that has read it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTH_SECRET", SECRET)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def api_app(auth_env: None) -> FastAPI:
    """One application for the session."""
    return create_app()


@pytest.fixture(scope="session")
def api_url(api_app: FastAPI) -> Iterator[str]:
    """Base URL of the application served by uvicorn in a background thread."""
    with serving(api_app) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    """A client whose token may enqueue every task, as a caller no other test uses."""
    with client_for(api_url, scopes=["*"]) as http:
        yield http


@pytest.fixture
def anonymous(api_url: str) -> Iterator[httpx.Client]:
    """A client without a token."""
    with httpx.Client(base_url=api_url, timeout=40) as http:
        yield http


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Settings re-read from the environment during and after the test."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
