"""The processor without Kafka (docs/architecture.md, 'Algorithms'): decode, checks, power
series, join, attribution, estimation, carbon and the lateness tick.

The faust app (``app.Processor``), recompute (``joulestream.commands.recompute``) and training
all call this one object, so the live path and a recompute of the same messages cannot drift:
only where series are stored and what a message's ``token`` is differ between them.
Methods raise ``RejectedInput`` (its ``reason`` is the dead-letter class) for input that must
not enter the join.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from joulestream.schemas import node_id
from joulestream.schemas.codec import Codec
from joulestream.schemas.frames import EnergyFrame
from joulestream.schemas.records import decode_sample, encode_energy
from joulestream.stream_processors.attribution import AttributionConfig
from joulestream.stream_processors.join import DEFAULT_MAX_READINGS, PowerSeries, add_reading
from joulestream.stream_processors.progress import NodeProgress
from joulestream.stream_processors.validation import (
    DEFAULT_MAX_WORKLOADS,
    InvalidRecord,
    check_key,
    check_reading,
    check_sample,
)
from joulestream.stream_processors.windows import Emitted, JoinContext, WindowJoin

if TYPE_CHECKING:  # the worker's reference data (models, grid), read only here
    from joulestream.stream_processors.reference import ReferenceData

T = TypeVar("T")
SeriesOf = Callable[[str], PowerSeries | None]


class CoreSettings(Protocol):
    """What the core takes of a worker's settings (``app.ProcessorSettings``)."""

    @property
    def attribution(self) -> AttributionConfig: ...
    @property
    def lateness_s(self) -> float: ...
    @property
    def learn_idle(self) -> bool: ...
    @property
    def max_readings(self) -> int: ...
    @property
    def max_workloads(self) -> int: ...


def lateness_tick(lateness_s: float) -> float:
    """How often waiting samples are checked against the lateness bound."""
    return min(1.0, max(lateness_s / 2, 0.05))


class Core(Generic[T]):
    def __init__(
        self,
        config: AttributionConfig,
        lateness_s: float,
        context: JoinContext | None = None,
        *,
        max_readings: int = DEFAULT_MAX_READINGS,
        max_workloads: int = DEFAULT_MAX_WORKLOADS,
        load_progress: Callable[[str], NodeProgress | None] = lambda key: None,
        codec: Codec | None = None,
    ) -> None:
        self.codec = codec or Codec()
        self.join: WindowJoin[T] = WindowJoin(
            config, lateness_s, context=context, load_progress=load_progress
        )
        self.max_readings = max_readings
        self.max_workloads = max_workloads
        self.tick_s = lateness_tick(lateness_s)

    @classmethod
    def from_settings(
        cls,
        settings: CoreSettings,
        reference: ReferenceData,
        load_progress: Callable[[str], NodeProgress | None] = lambda key: None,
    ) -> Core[T]:
        """The core of a worker with these settings; a recompute with the same options builds
        it here too, so the two cannot be configured apart."""
        return cls(
            settings.attribution,
            settings.lateness_s,
            JoinContext(
                pricing=reference.pricing,
                models=reference.models,
                learn_idle=settings.learn_idle,
            ),
            max_readings=settings.max_readings,
            max_workloads=settings.max_workloads,
            load_progress=load_progress,
        )

    def sample(
        self,
        key: bytes | None,
        value: bytes | None,
        series_of: SeriesOf,
        token: T,
        now: float,
        now_ns: int,
    ) -> list[Emitted[T]] | None:
        """Windows a NodeSample message settles; None for a duplicate (nothing to produce).
        ``now`` is the join's clock (monotonic live, the messages' own in a recompute),
        ``now_ns`` the wall clock that bounds windows in the future."""
        value = _value(value)
        sample = decode_sample(self.codec, value)
        check_key(key, sample.cluster, sample.node)
        check_sample(sample, now_ns, max_workloads=self.max_workloads)
        node = node_id(sample.cluster, sample.node)
        return self.join.on_sample(node, sample, series_of(node), token, now)

    def reading(
        self, key: bytes | None, value: bytes | None, series_of: SeriesOf, now_ns: int
    ) -> tuple[str, PowerSeries, bool]:
        """(node, its series with the reading, whether the series changed). The caller stores
        the series, then asks ``join.on_series`` for the windows it settles."""
        reading = self.codec.decode(_value(value), expect="PowerReading")
        check_key(key, reading["cluster"], reading["node"])
        check_reading(reading, now_ns)
        node = node_id(reading["cluster"], reading["node"])
        needed = self.join.needed_from(node)
        series, changed = add_reading(series_of(node), reading, self.max_readings, needed)
        return node, series, changed

    def expire(self, now: float, series_of: SeriesOf) -> list[Emitted[T]]:
        return self.join.expire(now, series_of)

    def encode(self, energy: EnergyFrame) -> bytes:
        """NodeEnergy bytes: the same for the live app and a recompute."""
        return encode_energy(self.codec, energy)


def _value(value: bytes | bytearray | None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise InvalidRecord("no-value", "message has no value (tombstone)")
    return bytes(value)
