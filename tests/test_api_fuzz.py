"""G12: fuzzing every API operation from the OpenAPI schema finds no server error.

Schemathesis generates requests (valid and invalid bodies, paths and queries) from the schema
the live server publishes, each sent with the credentials its route takes: an agent key, an ops
key, or a reviewer's session with its CSRF token. Each generated body of a POST is also sent as
multipart form data, and as a multipart body without a boundary. CI runs it on PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from reviewq.models import AgentKey
from reviewq.services import agent_keys

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("seeded")]
CSRF_SECRET = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz"  # 32 characters: an unmasked CSRF secret
EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def credentials(agent: Any, reviewer: User) -> dict[str, dict[str, str]]:
    """Headers per route prefix: what a legitimate caller of that route would send."""
    _, ops_key = agent_keys.agent_key_create(name="fuzz-ops", scope=AgentKey.Scope.OPS)
    # /v1/chat/completions answers at once whatever the pipeline does with a fuzzed request.
    AgentKey.objects.filter(id=agent[0].id).update(decision_wait_ms=0)
    session = SessionStore()
    session[SESSION_KEY] = str(reviewer.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = reviewer.get_session_auth_hash()
    session.create()
    reviewer_headers = {
        "Cookie": f"sessionid={session.session_key}; csrftoken={CSRF_SECRET}",
        "X-CSRFToken": CSRF_SECRET,
        "Referer": "http://127.0.0.1/",
    }
    return {
        "/api/v1/review": reviewer_headers,
        "/api/v1/traces": {"Authorization": f"Bearer {ops_key}"},
        "/api/v1/": {"Authorization": f"Bearer {agent[1]}"},
        "/v1/": {"Authorization": f"Bearer {agent[1]}"},
    }


def test_no_input_makes_the_api_fail_with_a_server_error(
    live_server_url: str, credentials: dict[str, dict[str, str]]
) -> None:
    # Schemathesis' own pytest integration (from_fixture) does not run under pytest 9: drive
    # each operation's Hypothesis strategy directly instead.
    operations = []
    # The agent API, the review API and the ops API; and the drop-in OpenAI endpoint.
    for published in ("/api/v1/openapi.json", "/v1/openapi.json"):
        schema = schemathesis.openapi.from_url(f"{live_server_url}{published}")
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"the published OpenAPI schema has an invalid operation: {result}"
            operations.append(result.ok())
    assert len(operations) >= 6
    assert any(operation.full_path == "/v1/chat/completions" for operation in operations)
    failures: list[str] = []
    # The credentials must get every request past authentication, or the fuzzing proves nothing.
    refused: list[str] = []
    for operation in operations:
        headers = next(
            value for prefix, value in credentials.items() if operation.full_path.startswith(prefix)
        )
        _fuzz(operation, headers, failures, refused)
    assert not failures, "\n".join(failures[:10])
    assert not refused, refused[:10]


def _fuzz(operation: Any, headers: dict[str, str], failures: list[str], refused: list[str]) -> None:
    """Sends Hypothesis-generated requests for one operation; records every 5xx."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Any) -> None:
        response = case.call(headers=headers, timeout=30)
        if response.status_code == 401:
            refused.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")
        for answer in [response, *_as_multipart(case, headers)]:
            if answer.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} ({answer.request.headers.get('Content-Type')}): "
                    f"{answer.status_code} {answer.text[:300]}"
                )

    send()


def _as_multipart(case: Any, headers: dict[str, str]) -> list[Any]:
    """The case's body again as multipart form fields, and as a multipart body with no boundary."""
    if case.method.upper() != "POST":
        return []
    sent = case.as_transport_kwargs(headers=headers)
    plain = {name: value for name, value in sent["headers"].items() if name.lower() != "content-type"}
    fields = case.body if isinstance(case.body, dict) else {"body": case.body}
    parts = {str(name): (None, json.dumps(value, default=str)) for name, value in fields.items()}
    common = {"params": sent.get("params"), "timeout": 30}
    return [
        requests.post(sent["url"], headers=plain, files=parts or {"empty": (None, "")}, **common),
        requests.post(
            sent["url"],
            headers={**plain, "Content-Type": "multipart/form-data"},
            data=b"--x\r\nbroken",
            **common,
        ),
    ]
