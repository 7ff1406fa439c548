"""Fuzz the HTTP API from its own ``/openapi.json`` with schemathesis, through the real server
(a worker process on real Kafka and Redis): every answer is documented, never a 500."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.http_helpers import Served, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzzed(_service_urls: tuple[str, str, bool],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(_service_urls, tmp_path_factory.mktemp("fuzz"),
                 http={"rate_per_s": 10_000, "burst": 10_000, "max_batch": 20}) as s:
        yield s


def test_every_answer_is_documented_and_none_is_a_500(fuzzed: Served) -> None:
    # schemathesis' own pytest plugin does not load under this pytest; its strategies do
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/labels", "/v1/drift"}
    answered: set[int] = set()
    for operation, mode in itertools.product(operations, GenerationMode):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=_EXAMPLES[operation.path], deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzzed.url, headers=fuzzed.headers)
            answered.add(response.status_code)
            assert response.status_code != 500, response.text
            # every other check of schemathesis' holds; this one cannot: the input schema
            # (features.max_feature_names, a feature's first type) refuses, with a documented
            # 422, events the static document allows, and it learns from the fuzzer's events
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        call()
    assert 200 in answered and 422 in answered


#: examples per operation and mode (schema-valid, then not): the bodies get most; the drift
#: topic is read to its end on each call
_EXAMPLES = {"/v1/predict": 50, "/v1/labels": 30, "/v1/features/{entity_id}": 15,
             "/v1/models": 3, "/v1/models/{name}": 15, "/v1/drift": 3}
