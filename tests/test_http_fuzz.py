"""Fuzz the HTTP API from its own ``/openapi.json`` with schemathesis, through the real server
(a worker process on real Kafka and Redis): every answer is documented, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.http_helpers import Served, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzzed(_service_urls: tuple[str, str, bool],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(_service_urls, tmp_path_factory.mktemp("fuzz"),
                 http={"rate_per_s": 10_000, "burst": 10_000, "max_batch": 20}) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(fuzzed: Served) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_500(case: schemathesis.Case,
                                                      fuzzed: Served) -> None:
    response = case.call(base_url=fuzzed.url, headers=fuzzed.headers)
    assert response.status_code < 500 or response.status_code == 503, response.text
    case.validate_response(response)
