"""Exit codes: the protocol between the collector, its workers, and whoever runs it.

systemd's ``Restart=on-failure`` restarts on any code but 0, and the unit
excludes ``CONFIG`` (``RestartPreventExitStatus``): a bad setting does not
get better by restarting. Kubernetes restarts the container on anything.
"""

OK = 0  # a clean stop (SIGTERM/SIGINT), everything flushed
FAILURE = 1  # an unexpected error (a traceback in the log)
CONFIG = 2  # a bad setting: one line on stderr names the variable and what is expected
KERNEL = 3  # the kernel side could not be set up (BPF programs, tracefs, headers)
WORKER_BOOT = 4  # a worker could not start (its sink: an unwritable --output, a bad Kafka setting)

DESCRIPTIONS = {
    OK: "clean stop",
    FAILURE: "unexpected error",
    CONFIG: "bad configuration",
    KERNEL: "the kernel side could not be set up",
    WORKER_BOOT: "a worker could not start",
}
