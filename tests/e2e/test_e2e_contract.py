"""The OpenAPI document is the truth: schemathesis fuzzes a live stack against its `/openapi.json`.

A stack of real processes runs with authentication on; schemathesis loads the document the first
orchestrator serves and runs every phase (examples, coverage, fuzzing, stateful) with every check it
has, among them `not_a_server_error`, `status_code_conformance`, `content_type_conformance`,
`response_headers_conformance`, `response_schema_conformance`, `positive_data_acceptance`,
`negative_data_rejection`, `missing_required_header`, `unsupported_method`, `ignored_auth`,
`use_after_free` and `ensure_resource_availability`. The stateful phase follows the document's links
from `POST /v1/sagas` to reading, cancelling and retrying the saga it created, and the test checks that
it did. (`use_after_free` has nothing to check, as no operation deletes; `object_level_authorization`
needs a second caller, and the fuzzer has one admin key.)

Two facts no schema can carry are taught to the fuzzer, and nothing else is excused:
- `Idempotency-Key` names one request body: a key sent again with another body is a 422 by design
  (SPEC section 3). Hypothesis repeats small values, so a valid key already sent with another body is
  swapped for a fresh one before the call. A malformed key is sent as generated.
- An order's total (quantity x unit price over all items) must be above 0 and fit numeric(14,2); the
  document says so in prose, and a schema-valid payload that breaks it is answered 422
  `invalid-payload`. That one answer is not counted as a rejected valid request.

The run is deterministic: the seed is fixed (`SAGALINE_CONTRACT_SEED` overrides it to explore) and
printed. It is bounded by `max-time`: examples and coverage run once per operation, then fuzzing and
the stateful phase take turns until the time is up (`SAGALINE_CONTRACT_REPORT=<file>` keeps every
finding of a longer exploratory run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sagaline import stack
from tests.e2e.conftest import running_stack

# A dev dependency of the workspace; without it the contract cannot be checked, and says why.
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (a dev dependency) is not installed")
from schemathesis import engine  # noqa: E402 - after the importorskip above
from schemathesis.engine import events  # noqa: E402

SEED = int(os.environ.get("SAGALINE_CONTRACT_SEED", "20251125"))
# Seconds for all phases. Examples and coverage run once per operation; fuzzing and stateful then take
# turns until this much time has passed, so the bound is the run's length (and more time finds more).
MAX_TIME = int(os.environ.get("SAGALINE_CONTRACT_MAX_TIME", "55"))  # longer runs also need -o timeout=0
ADMIN_KEY = f"contract-admin-{uuid.uuid4()}"
KEY = re.compile(r"[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*")


@pytest.fixture(scope="module")
async def live(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[stack.Supervisor]:
    """A stack with authentication on and one admin key, so 401, the bearer scheme and admin routes are real."""
    key_file = tmp_path_factory.mktemp("contract") / "admin.key"
    key_file.write_text(ADMIN_KEY)
    keys = [{"name": "fuzzer", "role": "admin", "key_file": str(key_file)}]
    async for supervisor in running_stack(pg_server, {"SAGALINE_AUTH": "on", "SAGALINE_API_KEYS": json.dumps(keys)}):
        yield supervisor


def one_body_per_key() -> Any:
    """A `before_call` hook: a valid Idempotency-Key already sent with another body gets a fresh key."""
    bodies: dict[str, str] = {}

    def before_call(context: Any, case: Any, **kwargs: Any) -> None:
        headers = case.headers or {}
        name = next((h for h in headers if h.lower() == "idempotency-key"), None)
        if case.method != "POST" or case.path != "/v1/sagas" or name is None:
            return
        key, body = str(headers[name]), json.dumps(case.body, sort_keys=True, default=repr)
        if KEY.fullmatch(key) and len(key) <= 255 and bodies.setdefault(key, body) != body:
            headers[name] = f"fresh-{uuid.uuid4()}"
            bodies[headers[name]] = body

    return before_call


def total_rule_is_not_a_rejected_valid_request(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """A `filter_failure` hook: keep every failure except a 422 for the order total, the rule no schema states."""
    if "positive_data_acceptance" not in type(failure).checks or response.status_code != 422:
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    total_only = problem.get("errors") and all(
        line.startswith("payload.items: the order total") for line in problem["errors"]
    )
    return not (problem.get("type", "").endswith("/invalid-payload") and total_only)


@dataclass
class Report:
    """What one run found, and enough about what it did to tell a real run from an empty one."""

    findings: list[str] = field(default_factory=list)
    scenarios: dict[str, int] = field(default_factory=dict)
    linked_reads: int = 0  # stateful reads of a saga the scenario created (a random id is a 404)
    stop_reason: str = ""
    seconds: float = 0.0

    def add(self, event: Any) -> None:
        self.scenarios[event.phase.value] = self.scenarios.get(event.phase.value, 0) + 1
        if event.phase.value == "stateful":
            for case_id, node in event.recorder.cases.items():
                answer = event.recorder.interactions.get(case_id)
                status = answer.response.status_code if answer is not None and answer.response is not None else 0
                if node.value.operation.label == "GET /v1/sagas/{saga_id}" and node.parent_id and status == 200:
                    self.linked_reads += 1
        for checks in event.recorder.checks.values():
            for check in checks:
                if check.failure_info is not None:
                    failure = check.failure_info.failure
                    self.findings.append(
                        f"[{event.phase.value}] {event.recorder.label}: {check.name}: {failure.title}\n"
                        f"{failure.message}\n{check.failure_info.code_sample}"
                    )


def fuzz(base_url: str) -> Report:
    """Run every schemathesis phase and check against the live document (blocking: run it in a thread)."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "max-time": MAX_TIME,
        "workers": 1,
        "request-timeout": 10,
        "auth": {"openapi": {"bearerAuth": {"bearer": ADMIN_KEY}}},
        "generation": {"max-examples": 25, "database": "none"},
        "phases": {"stateful": {"max-steps": 6, "generation": {"max-examples": 40}}},
    })  # fmt: skip
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    schema.hook("filter_failure")(total_rule_is_not_a_rejected_valid_request)
    before_call = schemathesis.hook("before_call")(one_body_per_key())  # dispatched globally only
    report = Report()
    try:
        for event in engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                report.add(event)
            elif isinstance(event, events.NonFatalError):
                report.findings.append(f"error in {event.label}: {event.info.title}: {event.info.message}")
            elif isinstance(event, events.FatalError):
                report.findings.append(f"fatal: {event.exception!r}")
            elif isinstance(event, events.EngineFinished):
                report.findings += [f"after the run: {failure.title}: {failure.message}" for failure in event.failures]
                report.stop_reason, report.seconds = event.stop_reason.value, event.running_time
    finally:
        schemathesis.hooks.unregister(before_call)
    if path := os.environ.get("SAGALINE_CONTRACT_REPORT"):  # every finding, for a long exploratory run
        Path(path).write_text("\n\n".join(report.findings))
    return report


async def test_the_api_keeps_every_promise_of_its_openapi_document(live: stack.Supervisor) -> None:
    print(f"schemathesis {schemathesis.__version__}, seed {SEED} (SAGALINE_CONTRACT_SEED={SEED} reproduces)")
    # The engine blocks; the stack's log pumps must keep running on this loop meanwhile.
    report = await asyncio.to_thread(fuzz, live.topology.orchestrator_url(0))
    print(f"ran {report.scenarios} in {report.seconds:.1f}s ({report.linked_reads} linked reads), {report.stop_reason}")
    assert not report.findings, f"seed {SEED}: {len(report.findings)} findings\n\n" + "\n\n".join(report.findings[:10])
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(report.scenarios), report.scenarios
    assert report.linked_reads, "the stateful phase followed the links from POST /v1/sagas to the saga it made"
