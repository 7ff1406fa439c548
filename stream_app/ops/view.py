"""What the metrics and the probes read of a running worker, through one small interface.

:class:`WorkerView` holds callables, not objects: a worker swaps its drift stage on a
promotion and creates its Kafka consumer only when it starts, so every read goes to what is
current. ``WorkerView.of_app(app)`` builds it for a :class:`~stream_app.app.StreamApp`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stream_app.app import StreamApp
    from stream_app.lifecycle import ModelKeeper
    from stream_app.pipeline.engine import Engine
    from stream_app.settings import Settings

__all__ = ["ConsumerView", "WorkerView", "partition_lag"]


class ConsumerView(Protocol):
    """What Faust's consumer and aiokafka's ``AIOKafkaConsumer`` both offer."""

    def assignment(self) -> Any: ...

    def highwater(self, tp: Any) -> int | None: ...


@dataclass(frozen=True)
class WorkerView:
    settings: Settings
    engine: Callable[[], Engine]
    #: the consumer, or None before it exists
    consumer: Callable[[], ConsumerView | None]
    keeper: Callable[[], ModelKeeper | None] = lambda: None

    @classmethod
    def of_app(cls, app: StreamApp) -> WorkerView:
        def consumer() -> ConsumerView | None:
            # Faust builds its consumer lazily: never make one here before the worker does
            return getattr(app, "_consumer", None)

        return cls(settings=app.settings, engine=lambda: app.engine, consumer=consumer,
                   keeper=lambda: app.keeper)

    def assignment(self) -> list[tuple[str, int]]:
        consumer = self.consumer()
        if consumer is None:
            return []
        return sorted((tp.topic, tp.partition) for tp in consumer.assignment())

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the high water, per assigned partition this worker has consumed."""
        consumer = self.consumer()
        if consumer is None:
            return {}
        highwaters = {(tp.topic, tp.partition): consumer.highwater(tp)
                      for tp in consumer.assignment()}
        return partition_lag(highwaters, self.engine().metrics.positions)


def partition_lag(highwaters: dict[tuple[str, int], int | None],
                  positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Records behind the high water per partition; a partition with no known high water or
    no position yet (nothing fetched, nothing consumed) is left out.

    >>> partition_lag({("e", 0): 25, ("e", 1): 3, ("e", 2): None}, {("e", 0): 10, ("e", 2): 4})
    {('e', 0): 15}
    """
    out: dict[tuple[str, int], int] = {}
    for key, hw in highwaters.items():
        pos = positions.get(key)
        if pos is not None and hw is not None and hw >= 0:
            out[key] = max(0, hw - pos)
    return out
