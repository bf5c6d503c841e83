"""akto-collector: eBPF API-traffic collector for Akto."""

__version__ = "0.1.0"
