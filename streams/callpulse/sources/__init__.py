"""Adapters that turn what an ACD already produces into canonical events (`schemas/`).

Every adapter builds events with `make_event` and ids with `event_id`, so the same source record
always yields the same `event_id`: a re-read, a restart from a checkpoint or a replay of history
publishes nothing the worker has not seen (the second stage drops repeated ids).

Finite sources (files) are plain iterators of events; live sources are async iterators of `Batch`,
whose `commit` the publisher calls once the batch's events are safely on Kafka (a checkpoint is
never ahead of what was published). What a source cannot map is counted in a `Skips`, never fatal.
May import `kpi`, `events` and `config`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import format_time  # noqa: F401  (adapters import it from here)

# Namespace of callpulse's name-based (version 5) event ids; never change it, or replays of
# history published before the change would count twice.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d4a52-3c1e-5b7a-9d0e-2a4c8b6e1f30")


def event_id(source: str, *parts: object) -> str:
    """A deterministic event id: the same source and parts always give the same id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join([source, *(str(p) for p in parts)])))


def make_event(type: str, t: float, source: str, event_id: str, **fields: Any) -> dict:
    """A canonical event (schema version 1). Fields that are None are left out."""
    event = {"schema_version": 1, "event_id": event_id, "type": type, "time": format_time(t), "source": source}
    event.update((k, v) for k, v in fields.items() if v is not None)
    return event


@dataclass
class Skips:
    """What a source read but did not turn into events, by reason, with the first few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    keep_examples: int = 3

    def add(self, reason: str, example: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if example and len(kept) < self.keep_examples:
            kept.append(example[:200])

    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Skips) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: self.keep_examples - len(kept)])

    def lines(self) -> list[str]:
        """One human-readable line per reason, most frequent first."""
        out = []
        for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            example = self.examples.get(reason)
            out.append(f"{n:>9,}  {reason}" + (f"  (e.g. {example[0]!r})" if example else ""))
        return out


@dataclass
class Batch:
    """Events a live source read together, and what to do once they are published."""

    events: list[dict]
    commit: Callable[[], None] | None = None  # e.g. save the file checkpoint; called after the flush
