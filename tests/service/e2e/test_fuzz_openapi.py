"""Property-based fuzzing of the whole OpenAPI schema (schemathesis) against a real server: no 5xx, ever.

Every operation of the served schema gets generated paths, queries, headers and bodies (random bytes for the
image bodies, which must be refused with a 4xx problem). The server is the random-model one with small limits,
so each call is quick. Hypothesis drives schemathesis's strategies directly (one test per operation).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.e2e.conftest import LiveServer

EXAMPLES_PER_OPERATION = 25


def _operations(url: str) -> dict[str, object]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def _fuzz(label: str, operation: object, url: str, seen: dict[str, set[int]], calls: list[int]) -> None:
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(base_url=url, timeout=120)
        seen.setdefault(label, set()).add(response.status_code)
        calls.append(response.status_code)
        assert response.status_code < 500, (
            f"{label} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )
        if response.status_code >= 400:
            content_type = response.headers.get("content-type", [""])  # schemathesis keeps every value
            assert content_type[0].startswith("application/problem+json"), response.text[:200]

    call()


def test_every_operation_survives_fuzzing(random_server: LiveServer) -> None:
    operations = _operations(random_server.url)
    assert len(operations) >= 12, sorted(operations)  # the whole API, not a part of it
    seen: dict[str, set[int]] = {}
    calls: list[int] = []
    for label, operation in operations.items():
        _fuzz(label, operation, random_server.url, seen, calls)
    print(f"{len(calls)} calls over {len(operations)} operations:", {k: sorted(v) for k, v in seen.items()})
    assert set(seen) == set(operations)
    assert httpx.get(f"{random_server.url}/readyz").status_code == 200
    assert 'status="500"' not in httpx.get(f"{random_server.url}/metrics").text


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
