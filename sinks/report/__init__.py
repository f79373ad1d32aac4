"""Energy, average power and carbon per namespace, pod, node or cluster, from the store."""
