"""A self-contained HTML report (figures embedded as PNG) of cross-device latency rankings.

Figures: SRCC heat map with devices ordered by hierarchical clustering (average linkage on 1 - SRCC),
latency scatter for chosen device pairs, and per-device latency distributions.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.cluster.hierarchy import leaves_list, linkage  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from harness import __version__  # noqa: E402
from harness.analysis.correlation import Correlations  # noqa: E402

if TYPE_CHECKING:
    from harness.analysis.workflow import ParetoResult


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Report:
    title: str
    space: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)

    def html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                 "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
                 "td:first-child,th:first-child{text-align:left}figcaption{color:#555;font-size:13px}</style>",
                 "</head><body>", f"<h1>{html.escape(self.title)}</h1>",
                 f"<p>space <b>{html.escape(self.space)}</b> · generated "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by harness {__version__}</p>"]
        for name, df in self.tables[:1]:
            parts += [f"<h2>{html.escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                                                  border=0, na_rep="–")]
        for fig in self.figures:
            b64 = base64.b64encode(fig.png).decode()
            parts += [f"<h2 id='{fig.name}'>{html.escape(fig.title)}</h2>",
                      f"<figure><img alt='{html.escape(fig.title)}' src='data:image/png;base64,{b64}'>"
                      f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"]
        for name, df in self.tables[1:]:
            parts += [f"<h2>{html.escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.4f}",
                                                                  border=0, na_rep="–")]
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, path: str | Path, png_dir: str | Path | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        if png_dir is not None:
            d = Path(png_dir)
            d.mkdir(parents=True, exist_ok=True)
            for fig in self.figures:
                (d / f"{fig.name}.png").write_bytes(fig.png)
        return path


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def cluster_order(matrix: pd.DataFrame) -> list[str]:
    """Devices ordered so that strongly correlated ones sit together (average linkage on 1 - SRCC)."""
    if len(matrix) < 3:
        return list(matrix.index)
    dist = 1.0 - matrix.fillna(0.0).to_numpy()
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 2.0)
    order = leaves_list(linkage(squareform(dist, checks=False), method="average"))
    return [matrix.index[i] for i in order]


def heatmap(matrix: pd.DataFrame, method: str = "SRCC") -> Figure:
    order = cluster_order(matrix)
    m = matrix.loc[order, order]
    n = len(order)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(m.to_numpy(dtype=float), cmap="RdYlGn", vmin=min(0.0, float(np.nanmin(m.to_numpy()))), vmax=1.0)
    ax.set_xticks(range(n), order, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), order, fontsize=8)
    if n <= 24:
        for i in range(n):
            for j in range(n):
                v = m.iat[i, j]
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6 if n > 12 else 8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=method)
    ax.set_title(f"{method} between devices (clustered)")
    return Figure("srcc_heatmap", f"{method} heat map", _png(fig),
                  "Each cell compares two devices on the architectures both have; rows and columns are ordered by "
                  "hierarchical clustering so that devices with similar rankings sit together.")


def scatter(wide: pd.DataFrame, pairs: Sequence[tuple[str, str]], corr: Correlations) -> Figure:
    k = len(pairs)
    cols = min(k, 2)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False)
    for ax, (a, b) in zip(axes.flat, pairs):
        both = wide[[a, b]].dropna()
        both = both[(both[a] > 0) & (both[b] > 0)]
        ax.scatter(both[a], both[b], s=4, alpha=0.4, linewidths=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(which="minor", labelsize=7)
        ax.set_xlabel(f"{a} (ms)")
        ax.set_ylabel(f"{b} (ms)")
        ax.set_title(f"SRCC {corr.get(a, b):.3f} on {len(both)} archs", fontsize=10)
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    fig.tight_layout()
    return Figure("latency_scatter", "Latency scatter for chosen pairs", _png(fig),
                  "Each point is one architecture (log-log axes). A tight monotone cloud means the proxy's "
                  "ranking carries over to the target.")


def distributions(wide: pd.DataFrame, order: Sequence[str], origins: dict[str, str]) -> Figure:
    data = [wide[d].dropna().to_numpy() for d in order]
    data = [x[x > 0] for x in data]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.35 * len(order) + 1.2)))
    ax.boxplot(data, vert=False, showfliers=False, whis=(1, 99))
    ax.set_yticks(range(1, len(order) + 1), [f"{d} ({origins.get(d, '?')[0]})" for d in order], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms, log scale); whiskers at 1st / 99th percentile")
    ax.invert_yaxis()
    fig.tight_layout()
    return Figure("latency_distributions", "Latency distributions per device", _png(fig),
                  "(m) measured with harness, (i) imported. Devices in the heat map's cluster order.")


def default_pairs(corr: Correlations, k: int = 4) -> list[tuple[str, str]]:
    """The most and least correlated pairs: what a reader wants to see first."""
    p = corr.pairs.dropna(subset=["srcc"]).sort_values("srcc")
    if p.empty:
        return []
    picks = [*p.tail(k // 2).itertuples(), *p.head(k - k // 2).itertuples()]
    return list(dict.fromkeys((r.device_a, r.device_b) for r in picks))


def build_report(wide: pd.DataFrame, corr: Correlations, space: str, origins: dict[str, str],
                 pairs: Sequence[tuple[str, str]] | None = None, method: str = "SRCC") -> Report:
    matrix = corr.matrix()
    order = cluster_order(matrix)
    report = Report(f"Cross-device latency rankings — {space}", space)
    summary = pd.DataFrame({
        "device": order,
        "origin": [origins.get(d, "?") for d in order],
        "architectures": [int(wide[d].notna().sum()) for d in order],
        "median ms": [float(wide[d].median()) for d in order],
        "mean SRCC to others": [float(matrix.loc[d].drop(d).mean()) for d in order],
    })
    report.tables.append(("Devices", summary))
    report.figures.append(heatmap(matrix, method))
    chosen = list(pairs) if pairs else default_pairs(corr)
    if chosen:
        report.figures.append(scatter(wide, chosen, corr))
    report.figures.append(distributions(wide, order, origins))
    report.tables.append(("All pairs", corr.pairs.sort_values("srcc", ascending=False)))
    return report


def pareto_figure(result: ParetoResult) -> Figure:
    """Target latency vs accuracy: all architectures, the target's front and the fronts found by proxy/predictor."""
    frame = result.frame
    target, proxy, acc_col = result.target, result.proxy, result.accuracy
    lat, acc = frame[target].to_numpy(), frame[acc_col].to_numpy()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter(lat, acc, s=4, color="#bbbbbb", label="all compared architectures", linewidths=0)
    styles = [("proxy_front", f"front found with proxy {proxy}", "#d62728", "o"),
              ("predicted_front", f"front found with {result.predicted_from or 'the predictor'}", "#1f77b4",
               "s")]
    fronts = result.fronts()
    tf = result.proxy_front.target_front
    order = np.argsort(lat[tf])
    ax.step(lat[tf][order], acc[tf][order], where="post", color="black", lw=1.5, label=f"true front on {target}")
    for key, label, colour, marker in styles:
        if key in fronts:
            idx = fronts[key].proxy_front
            ax.scatter(lat[idx], acc[idx], s=22, facecolors="none", edgecolors=colour, marker=marker,
                       label=f"{label} (recall {fronts[key].recall:.2f}, HV {fronts[key].hv_ratio:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel(f"{target} latency (ms, measured)")
    ax.set_ylabel(acc_col)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return Figure("pareto_fronts", "Pareto fronts judged on the target", _png(fig),
                  "Each front is chosen with one latency (proxy's, or predicted) and plotted at the target's "
                  "measured latency: points near the black staircase mean the proxy's choices hold on the target.")


def pareto_report(result: ParetoResult, space: str) -> Report:
    report = Report(f"Pareto validation — {result.proxy} → {result.target}", space)
    rows = [{"front from": k.replace("_front", ""), **c.summary()} for k, c in result.fronts().items()]
    report.tables.append(("Summary", pd.DataFrame(rows)))
    report.figures.append(pareto_figure(result))
    levels = pd.DataFrame(result.proxy_front.per_level)
    report.tables.append(("Latency regret per accuracy level (proxy front)", levels))
    return report
