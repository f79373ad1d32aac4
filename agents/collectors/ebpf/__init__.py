"""The eBPF collector through bcc, one concern per module: ``support`` (what the node offers),
``program`` (compile and attach ``bpf/counters.c``), ``loader`` (does that in a short-lived
process and hands the agent the descriptors, so clang/LLVM never enter the agent), ``maps``
(read the counts map with bpf(2)), ``flusher`` (charge running tasks before a read),
``cgroup_ids`` (v2 ids → paths, kernel threads), ``aggregate`` (map entries → workloads),
``memory`` (working sets) and ``collector`` (the Collector itself). The choice between it and
procfs is ``..choice``."""
