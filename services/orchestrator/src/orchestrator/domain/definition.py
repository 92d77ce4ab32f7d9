"""Saga definitions as code: a saga type is an ordered list of steps, each a participant call.

A definition names participant operations by (service, method) and builds their requests with pure
functions of the saga's payload and its context (the outputs of earlier steps). The engine knows
nothing of orders or payments; a new saga type is a new definition, not an engine change. Each
definition carries a version, and a saga keeps the version it started with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from orchestrator.domain.retry import RetryPolicy

Json = dict[str, Any]
RequestBuilder = Callable[[Mapping[str, Any], Mapping[str, Any]], Json]
OutputExtractor = Callable[[Mapping[str, Any]], Json]
PayloadValidator = Callable[[Any], Json]


def _no_output(_: Mapping[str, Any]) -> Json:
    return {}


@dataclass(frozen=True)
class Call:
    """One participant operation: where it goes, what it sends, what it keeps, how long and how often."""

    service: str
    method: str
    request: RequestBuilder
    timeout: timedelta
    retry: RetryPolicy
    output: OutputExtractor = _no_output


@dataclass(frozen=True)
class StepDefinition:
    """A forward action and its compensation; no compensation makes the step forward-only.

    A forward-only step (such as confirming an order) is the saga's point of no return: once it has
    started, the saga finishes forward, retrying the step until it succeeds, whatever the deadline.
    """

    name: str
    action: Call
    compensation: Call | None = None

    @property
    def forward_only(self) -> bool:
        """True when nothing can undo this step."""
        return self.compensation is None


@dataclass(frozen=True)
class SagaDefinition:
    """A saga type at one version."""

    saga_type: str
    version: int
    steps: tuple[StepDefinition, ...]
    deadline: timedelta
    validate: PayloadValidator
    compensation_timeout: timedelta = timedelta(seconds=15)
    services: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"saga {self.saga_type} needs at least one step and unique step names")
        services = {s.action.service for s in self.steps} | {
            s.compensation.service for s in self.steps if s.compensation
        }
        object.__setattr__(self, "services", frozenset(services))

    def step(self, position: int) -> StepDefinition:
        """The step at position (0-based)."""
        return self.steps[position]


class Registry:
    """Every known definition, by type and version; new sagas start on the latest version."""

    def __init__(self, definitions: list[SagaDefinition]) -> None:
        """Index definitions; two with the same type and version are a programming error."""
        self._by_key: dict[tuple[str, int], SagaDefinition] = {}
        for definition in definitions:
            key = (definition.saga_type, definition.version)
            if key in self._by_key:
                raise ValueError(f"duplicate definition {key}")
            self._by_key[key] = definition

    def latest(self, saga_type: str) -> SagaDefinition | None:
        """The newest version of saga_type, or None when the type is unknown."""
        versions = [d for (t, _), d in self._by_key.items() if t == saga_type]
        return max(versions, key=lambda d: d.version) if versions else None

    def get(self, saga_type: str, version: int) -> SagaDefinition:
        """The exact version a saga started with."""
        return self._by_key[(saga_type, version)]

    @property
    def versions(self) -> list[tuple[str, int]]:
        """Every (saga type, version) this registry can run."""
        return sorted(self._by_key)

    @property
    def types(self) -> list[str]:
        """Known saga types."""
        return sorted({t for t, _ in self._by_key})

    @property
    def services(self) -> frozenset[str]:
        """Every participant service any definition calls."""
        return frozenset().union(*(d.services for d in self._by_key.values()))
