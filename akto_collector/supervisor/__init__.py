"""The supervisor process: the arbiter (workers, signals, memory guard), the
router (ring buffer drain, per-worker queues), the uprobe manager (process
scanner, ELF analysis, attaching) and the operator's view (stats)."""
