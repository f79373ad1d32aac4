"""Long-term store of energy windows: PostgreSQL (day-partitioned) or SQLite (embedded)."""
