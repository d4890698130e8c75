"""The service's Prometheus metrics, defined once (imported by the code that counts)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HOOK_REQUESTS = Counter(
    "ichis_hook_requests", "Hook calls by service, hook and outcome", ["service", "hook", "outcome"]
)
HOOK_LATENCY = Histogram(
    "ichis_hook_request_seconds", "Hook call latency in the service", ["service", "hook", "outcome"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
PREFETCH_KEYS = Counter("ichis_prefetch_keys", "Prefetch keys by where the data came from", ["key", "source"])
FHIR_CALLBACK_LATENCY = Histogram(
    "ichis_fhir_callback_seconds",
    "FHIR call-back latency per prefetch key",
    ["key"],
    buckets=_LATENCY_BUCKETS,
)
CARDS = Counter("ichis_cards", "Cards returned, by what they stated", ["stratum"])
FEEDBACK = Counter("ichis_feedback_items", "Feedback items stored, by outcome", ["outcome"])
AUTH_FAILURES = Counter("ichis_auth_failures", "Requests refused by client authentication")


def outcome_label(status: int, cards: int) -> str:
    if status == 200:
        return "card" if cards else "no_card"
    return str(status) if status in (400, 401, 412, 413, 415) else f"{status // 100}xx"


def record_hook(service: str, hook: str, status: int, cards: int, seconds: float) -> None:
    outcome = outcome_label(status, cards)
    HOOK_REQUESTS.labels(service, hook, outcome).inc()
    HOOK_LATENCY.labels(service, hook, outcome).observe(seconds)
