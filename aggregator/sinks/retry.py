"""When to try a failed request again: exponential backoff with full jitter, honouring ``Retry-After``,
with a bounded number of attempts and a bounded amount of time in one run.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the retries of many runs that failed
together, as AWS's "Exponential Backoff and Jitter" recommends. A ``Retry-After`` from the vendor is a floor:
we never come back sooner than it asked.

Two clocks: inside a run, ``RetryBudget`` bounds the sleeping (a run must end so that the next can start);
across runs, ``RetryPolicy.later`` gives the ``retry_at`` stored with a failed outbox entry.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aggregator.model import SinkError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # tries of one request in one run, the first included
    base: float = 0.5  # seconds: the cap of the first backoff draw
    cap: float = 30.0  # the largest backoff draw inside a run
    budget: float = 20.0  # seconds a sink may spend on one run's delivery, sleeping included
    later_base: float = 30.0  # first retry in a later run: within this many seconds
    later_cap: float = 3600.0  # never wait longer than this between runs' attempts

    @classmethod
    def from_config(cls, config: Any) -> RetryPolicy:
        return cls(
            max_attempts=max(1, int(config.get("sinks.retry.max_attempts", cls.max_attempts))),
            base=float(config.get("sinks.retry.base_seconds", cls.base)),
            cap=float(config.get("sinks.retry.cap_seconds", cls.cap)),
            budget=float(config.get("sinks.retry.budget_seconds", cls.budget)),
            later_base=float(config.get("sinks.retry.later_base_seconds", cls.later_base)),
            later_cap=float(config.get("sinks.retry.later_cap_seconds", cls.later_cap)),
        )

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based) within a run."""
        draw = rng.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))
        return max(draw, retry_after or 0.0)

    def later(self, attempts: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds from now until an entry that has failed ``attempts`` times is due again.

        At least one second, so that a failed entry is never due again within the same run.
        """
        exponent = min(max(attempts - 1, 0), 30)
        draw = rng.uniform(0.0, min(self.later_cap, self.later_base * (2**exponent)))
        return max(1.0, draw, retry_after or 0.0)


@dataclass(slots=True)
class RetryBudget:
    """The time one sink may still spend in this run."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def allows(self, wait: float) -> bool:
        return wait < self.remaining


@dataclass(slots=True)
class RetryStats:
    attempts: int = 0
    retries: int = 0
    waited: float = 0.0
    retry_after_honoured: int = 0


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    budget: RetryBudget,
    *,
    rng: random.Random,
    sleep: Callable[[float], None] = time.sleep,
    stats: RetryStats | None = None,
) -> T:
    """Call ``fn`` until it succeeds, retrying retryable ``SinkError``s within the policy and the budget.

    Raises the last error when attempts or time run out, and any non-retryable error at once.
    """
    stats = stats if stats is not None else RetryStats()
    attempt = 0
    while True:
        attempt += 1
        stats.attempts += 1
        try:
            return fn()
        except SinkError as exc:
            if not exc.retryable or attempt >= policy.max_attempts:
                raise
            wait = policy.backoff(attempt, rng, exc.retry_after)
            if not budget.allows(wait):
                raise
            if exc.retry_after is not None:
                stats.retry_after_honoured += 1
            stats.retries += 1
            stats.waited += wait
            sleep(wait)
