"""Results store, importers and exporters of tidy latency tables."""
