"""Results store, importers and exporters of tidy latency tables."""

from harness.results.export import latency_table, write_table
from harness.results.importer import ImportFileError, ImportReport, import_table
from harness.results.store import Store

__all__ = ["Store", "import_table", "ImportReport", "ImportFileError", "latency_table", "write_table"]
