"""The fleet's records as its agents write them: NodeSample v3 frames (workload dictionary per
simulated agent, counters column-wise; docs/architecture.md, 'Records') and PowerReadings.

Each simulated node keeps the agents' ``TableSchedule``: its workloads get small ids, an
identity travels when it is new or changed (pod churn reuses freed ids with a new entry), and
every K-th sample carries the whole table and the node's capabilities. Tests check that the
frames decode to the windows the generator drew (``Window.sample``).
"""

from __future__ import annotations

from joulestream.commands.loadgen.fleet import SimNode, Window
from joulestream.schemas import Record
from joulestream.schemas.codec import Codec
from joulestream.schemas.features import FEATURE_NAMES
from joulestream.schemas.frames import Identity, SampleFrame
from joulestream.schemas.records import DEFAULT_FULL_TABLE_EVERY, TableSchedule, encode_sample


class Encoder:
    def __init__(self, codec: Codec | None = None, full_every: int = DEFAULT_FULL_TABLE_EVERY):
        self.codec = codec or Codec()
        self.full_every = full_every

    def _table(self, node: SimNode) -> TableSchedule:
        if node.table is None:
            node.table = TableSchedule(self.full_every)
        table: TableSchedule = node.table
        return table

    def frame(self, window: Window) -> SampleFrame:
        node = window.node
        ids, entries, full = self._table(node).assign(
            [
                ((w.header["kind"], w.header["workload_id"]), Identity.from_record(w.header))
                for w in window.workloads
            ]
        )
        columns = list(zip(*window.rows, strict=True)) if window.rows else [()] * len(FEATURE_NAMES)
        totals = window.totals if window.rows else (0,) * len(FEATURE_NAMES)
        has = node.counters
        return SampleFrame(
            cluster=node.cluster,
            node=node.name,
            agent_instance=node.agent_instance,
            seq=window.seq,
            window_start_ns=window.start_ns,
            window_end_ns=window.end_ns,
            collector=node.collector,
            power_source=node.power_source,
            node_totals={
                name: (total if name in has else None)
                for name, total in zip(FEATURE_NAMES, totals, strict=True)
            },
            ids=ids,
            columns={
                name: (list(column) if name in has else None)
                for name, column in zip(FEATURE_NAMES, columns, strict=True)
            },
            identities=entries,
            full_table=full,
            capabilities=list(node.capabilities) if full else None,
            node_info=node.node_info,
        )

    def sample(self, window: Window) -> bytes:
        return encode_sample(self.codec, self.frame(window))

    def reading(self, record: Record) -> bytes:
        return self.codec.encode("PowerReading", record, validate=False)
