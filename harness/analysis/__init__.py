"""Cross-device analysis: SRCC, proxy choice, reports. Functions return pandas DataFrames."""

from harness.analysis.api import latencies, proxies, report, srcc, srcc_matrix
from harness.analysis.correlation import Correlations, correlate
from harness.analysis.proxy import rank_proxies

__all__ = ["latencies", "srcc", "srcc_matrix", "proxies", "report", "correlate", "Correlations", "rank_proxies"]
