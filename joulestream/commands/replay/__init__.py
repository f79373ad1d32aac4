"""``joulestream replay``: a time range of raw samples and power readings, again.

Sources: Kafka (start and end offsets from ``offsets_for_times`` on every samples and power
topic, the shared ones and every cluster's own; the range is by Kafka timestamp) or the
Parquet archive (``sinks.archive``; the range is by record time). Either way the messages come
in order per node (samples and readings of a node merged by time) with their original key,
value, headers and timestamp bytes.

Targets: topics (``--to-prefix`` for a whole new topic set, ``--to-topic`` for one kind),
an archive directory (``--out``, the archive sink's layout, readable by ``--source archive``),
nothing (``--dry-run``: count), or the processor itself (``--recompute``: the live app's join,
attribution and estimation re-run into an energy topic or a store). Produced records keep
their key, so murmur2 puts them on the same partition numbers as the originals.

Ctrl-C (or SIGTERM) stops cleanly: what was read is flushed and a summary says how far it got.
"""
