"""harness: on-device latency measurement and benchmarking for hardware-aware NAS."""

__version__ = "0.1.0"
__all__ = ["__version__"]
