"""The eBPF collector through bcc, one concern per module: ``support`` (what the node offers),
``program`` (compile and attach ``bpf/counters.c``), ``flusher`` (charge running tasks before a
read), ``compiler_memory`` (give clang/LLVM's memory back), ``cgroup_ids`` (v2 ids → paths,
kernel threads), ``aggregate`` (map entries → workloads), ``memory`` (working sets) and
``collector`` (the Collector itself). The choice between it and procfs is ``..choice``."""
