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
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.cluster.hierarchy import leaves_list, linkage  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from harness import __version__  # noqa: E402
from harness.analysis.correlation import DEFAULT_MIN_OVERLAP, MIN_COMMON, Correlations  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.results.atomic import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from harness.analysis.workflow import ParetoResult


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    caption: str = ""
    how_to_read: str = ""


@dataclass
class Table:
    name: str
    frame: pd.DataFrame
    how_to_read: str = ""
    float_format: str = "{:.4g}"


@dataclass
class Report:
    title: str
    space: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)  # the first goes above the figures, the rest below
    facts: list[str] = field(default_factory=list)     # one line each under the title: data, settings

    def _table(self, t: Table) -> list[str]:
        fmt = t.float_format
        return [f"<h2>{html.escape(t.name)}</h2>",
                *([f"<p class='how'><b>How to read this:</b> {html.escape(t.how_to_read)}</p>"] if t.how_to_read else []),
                t.frame.to_html(index=False, float_format=lambda v: fmt.format(v), border=0, na_rep="–")]

    def html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                 "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
                 "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;max-width:28em;overflow-wrap:anywhere}"
                 "th{background:#f3f3f3}"
                 "td:first-child,th:first-child{text-align:left}figcaption{color:#555;font-size:13px}"
                 "p.how{background:#f6f8fa;border-left:3px solid #8ab;padding:4px 8px;font-size:14px}"
                 "ul.facts{color:#444;font-size:14px}</style>",
                 "</head><body>", f"<h1>{html.escape(self.title)}</h1>",
                 f"<p>space <b>{html.escape(self.space)}</b> · generated "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by harness {__version__}</p>"]
        if self.facts:
            parts.append("<ul class='facts'>" + "".join(f"<li>{html.escape(f)}</li>" for f in self.facts) + "</ul>")
        for t in self.tables[:1]:
            parts += self._table(t)
        for fig in self.figures:
            b64 = base64.b64encode(fig.png).decode()
            parts += [f"<h2 id='{fig.name}'>{html.escape(fig.title)}</h2>",
                      *([f"<p class='how'><b>How to read this:</b> {html.escape(fig.how_to_read)}</p>"]
                        if fig.how_to_read else []),
                      f"<figure><img alt='{html.escape(fig.title)}' src='data:image/png;base64,{b64}'>"
                      f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"]
        for t in self.tables[1:]:
            parts += self._table(t)
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, path: str | Path, png_dir: str | Path | None = None) -> Path:
        path = Path(path)
        if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():  # before any writing
            raise HarnessError(f"--png {png_dir} is a file; name a folder for the figures")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        if png_dir is not None:
            d = Path(png_dir)
            d.mkdir(parents=True, exist_ok=True)
            for fig in self.figures:
                with atomic_path(d / f"{fig.name}.png") as tmp:
                    tmp.write_bytes(fig.png)
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


def heatmap(matrix: pd.DataFrame, method: str = "SRCC", overlap: pd.DataFrame | None = None,
            min_overlap: int = 0, order: Sequence[str] | None = None) -> Figure:
    """Cells on fewer than ``min_overlap`` common architectures are hatched grey with their n, and left out
    of the colour scale (an SRCC of -0.5 on 5 architectures would otherwise stretch it). ``order``: the rows'
    order (default: clustered on ``matrix``); the report passes the tables' order, clustered on reliable pairs."""
    order = [d for d in order if d in matrix.index] if order is not None else cluster_order(matrix)
    m = matrix.loc[order, order].to_numpy(dtype=float)
    n = len(order)
    low = np.zeros_like(m, dtype=bool)
    if overlap is not None and min_overlap:
        nn = overlap.loc[order, order].to_numpy()
        low = (nn < min_overlap) & ~np.eye(n, dtype=bool) & ~np.isnan(m)
    shown = np.where(low, np.nan, m)
    size = max(5.0, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    finite = shown[np.isfinite(shown)]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    im = ax.imshow(shown, cmap="RdYlGn", vmin=vmin, vmax=1.0)
    for i, j in zip(*np.nonzero(low)):
        ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#eeeeee", edgecolor="#999999",
                                                  hatch="///", linewidth=0))
        if n <= 24:
            ax.text(j, i, f"n={int(nn[i, j])}", ha="center", va="center", fontsize=6 if n > 12 else 7, color="#444")
    ax.set_xticks(range(n), [_short(d) for d in order], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), [_short(d) for d in order], fontsize=8)
    if n <= 24:
        for i in range(n):
            for j in range(n):
                if np.isfinite(shown[i, j]):
                    ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", fontsize=6 if n > 12 else 8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=method)
    ax.set_title(f"{method} between devices (clustered)")
    n_low = int(low.sum() // 2)
    caption = ("Each cell compares two devices on the architectures both have; rows and columns are ordered by "
               "hierarchical clustering so that devices with similar rankings sit together.")
    if n_low:
        caption += (f" {n_low} pair(s) share fewer than {min_overlap} architectures: hatched with their n, left out "
                    "of the colour scale, the device means and the default scatter plots.")
    return Figure("srcc_heatmap", f"{method} heat map", _png(fig), caption,
                  how_to_read="Green (near 1) means two devices rank architectures alike, so one can stand in for "
                              "the other when searching; red means the fastest models on one are not the fastest "
                              "on the other. Blocks of green along the diagonal are families of similar devices.")


def scatter(wide: pd.DataFrame, pairs: Sequence[tuple[str, str]], corr: Correlations, method: str = "SRCC") -> Figure:
    k = len(pairs)
    cols = min(k, 2)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False)
    for ax, (a, b) in zip(axes.flat, pairs):
        both = wide[[a, b]].dropna()
        both = both[(both[a] > 0) & (both[b] > 0)]
        few = len(both) < 300  # 3 points at size 4 and alpha 0.4 were next to invisible
        ax.scatter(both[a], both[b], s=14 if few else 4, alpha=0.8 if few else 0.4, linewidths=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            _plain_log_labels(axis)
        ax.tick_params(which="minor", labelsize=7)
        ax.set_xlabel(f"{_short(a)} (ms)")
        ax.set_ylabel(f"{_short(b)} (ms)")
        value = corr.get(a, b)
        ax.set_title(f"{method} {value:.3f} on {len(both)} archs" if np.isfinite(value)
                     else f"no {method} on {len(both)} archs (a device's latencies are all equal)", fontsize=10)
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    fig.tight_layout()
    return Figure("latency_scatter", "Latency scatter for chosen pairs", _png(fig),
                  "Each point is one architecture (log-log axes); by default the two most and the two least "
                  "correlated pairs.",
                  how_to_read="A thin rising band means the x device orders architectures like the y device (a "
                              "good proxy); a wide or bent cloud means rankings change, and where it widens tells "
                              "you which latency range disagrees.")


def _plain_log_labels(axis) -> None:
    """Plain numbers on a log axis, minor ticks labelled only where few fit: every minor tick labelled "%g" ran
    into each other ("0.0080.0070.006") over more than a decade, and the default's "3×10⁰" did in a box plot."""
    axis.set_major_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _horizontal() -> dict:
    """Matplotlib 3.10 renamed ``vert=False`` to ``orientation='horizontal'`` (the old name warns from 3.11)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _short(name: str, width: int = 40) -> str:
    """A device name as a figure label: a 250-character name squeezed the plot away (matplotlib could not lay it
    out and warned on stderr); its start and end tell devices apart, the full name is in the tables."""
    name = str(name)
    return name if len(name) <= width else f"{name[:width // 2 - 1]}…{name[-(width // 2 - 1):]}"


def distributions(wide: pd.DataFrame, order: Sequence[str], origins: dict[str, str]) -> Figure:
    data = [wide[d].dropna().to_numpy() for d in order]
    data = [x[x > 0] for x in data]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.35 * len(order) + 1.2)))
    ax.boxplot(data, showfliers=False, whis=(1, 99), **_horizontal())
    ax.set_yticks(range(1, len(order) + 1), [f"{_short(d)} ({origins.get(d, '?')[0]})" for d in order], fontsize=8)
    ax.set_xscale("log")
    _plain_log_labels(ax.xaxis)
    ax.set_xlabel("latency per inference (ms, log scale); whiskers at 1st / 99th percentile")
    ax.invert_yaxis()
    fig.tight_layout()
    return Figure("latency_distributions", "Latency distributions per device", _png(fig),
                  "(m) measured with harness, (i) imported. Devices in the heat map's cluster order.",
                  how_to_read="Each box spans the middle half of the architectures' latencies on one device "
                              "(line: median). Compare spreads, not positions: a device whose box is narrow "
                              "separates architectures poorly, so its ranking is more sensitive to noise.")


def default_pairs(corr: Correlations, k: int = 4, min_overlap: int = 0) -> list[tuple[str, str]]:
    """The most and least correlated pairs (on enough common architectures): what a reader wants to see first."""
    p = corr.pairs.dropna(subset=["srcc"])
    p = p[p.n_common_archs >= min_overlap].sort_values("srcc")
    if p.empty:
        return []
    picks = [*p.tail(k // 2).itertuples(), *p.head(k - k // 2).itertuples()]
    return list(dict.fromkeys((r.device_a, r.device_b) for r in picks))


def build_report(wide: pd.DataFrame, corr: Correlations, space: str, origins: dict[str, str],
                 pairs: Sequence[tuple[str, str]] | None = None, method: str = "SRCC",
                 min_overlap: int = DEFAULT_MIN_OVERLAP, facts: pd.DataFrame | None = None,
                 source: str = "", measurements: pd.DataFrame | None = None,
                 sentinel_checks: pd.DataFrame | None = None, energy: pd.DataFrame | None = None) -> Report:
    matrix = corr.matrix()
    reliable = corr.matrix(min_overlap)
    # devices in no pair (the only one, or sharing nothing) still get their row and distribution: a one-device
    # report said "0 devices" beside its own table of sources
    order = cluster_order(reliable) + [d for d in wide.columns if d not in reliable.index]
    report = Report(f"Cross-device latency rankings — {space}", space)
    n_low = int(((corr.pairs.n_common_archs < min_overlap) & corr.pairs.srcc.notna()).sum())
    undefined = corr.pairs.srcc.isna()
    few = undefined & (corr.pairs.n_common_archs < MIN_COMMON)  # no value at all (srcc lists them)
    none_note = (f"; {int(few.sum())} more pair(s) share too few architectures for any value" if few.any() else "")
    if (undefined & ~few).any():  # a constant device ranks nothing: not a matter of overlap
        none_note += (f"; {int((undefined & ~few).sum())} pair(s) with a device whose latencies are all equal "
                      "have no value (no ranking to compare)")
    report.facts = [f"store: {source}" if source else "",
                    f"{len(order)} devices ({sum(origins.get(d) == 'measured' for d in order)} measured with harness, "
                    f"{sum(origins.get(d) == 'imported' for d in order)} imported), {len(wide)} architectures",
                    f"{method}: each pair on the architectures both devices have; pairs on fewer than {min_overlap} "
                    f"common architectures are shown but left out of summaries ({n_low} such pair(s){none_note})"]
    report.facts = [f for f in report.facts if f]
    summary = pd.DataFrame({
        "device": order,
        "origin": [origins.get(d, "?") for d in order],
        "architectures": [int(wide[d].notna().sum()) for d in order],
        "median ms": [float(wide[d].median()) for d in order],
        f"mean {method} to others": [float(reliable.loc[d].drop(d).mean()) if d in reliable.index else np.nan
                                     for d in order],
    })
    report.tables.append(Table("Devices", summary,
                               f"One row per device in the heat map's order. The mean {method} to the others "
                               f"(pairs on ≥ {min_overlap} common architectures) says how typical its ranking is: "
                               "a high value makes a good general proxy."))
    if len(matrix) >= 2:
        report.figures.append(heatmap(matrix, method, corr.overlap(), min_overlap, order))
    else:
        report.facts.append(f"fewer than two devices with data in {space}: no {method} to show; measure or import "
                            "another device to compare rankings")
    chosen = list(pairs) if pairs else default_pairs(corr, min_overlap=min_overlap)
    if chosen:
        report.figures.append(scatter(wide, chosen, corr, method))
    report.figures.append(distributions(wide, order, origins))
    if measurements is not None:
        fig = timeline(measurements)
        if fig is not None:
            report.figures.append(fig)
    if sentinel_checks is not None and not sentinel_checks.empty:
        report.figures.append(sentinel_series(sentinel_checks))
    if energy is not None and not energy.empty:
        report.tables.append(Table("Energy", energy_table(wide, energy),
                                   "Devices measured with policy.energy: millijoules per inference (the whole board "
                                   "while the model runs), the power that implies (mJ / ms = W), and how alike energy "
                                   "and latency rank the architectures: below ~0.9 an energy-aware search picks other "
                                   "architectures than a latency-aware one.", float_format="{:.3f}"))
    if facts is not None and not facts.empty:
        report.tables.append(Table("Where the numbers come from", facts,
                                   "Measured devices: the runtime and version, timing policy, machine and campaign "
                                   "dates their latencies were measured with (latest campaign). Imported devices: "
                                   "the file they came from. Differences here explain differences above."))
    allp = corr.pairs.assign(**{f"below {min_overlap} archs": np.where(corr.pairs.n_common_archs < min_overlap,
                                                                        "yes", "")})
    allp = allp.sort_values("srcc", ascending=False)
    if method != "SRCC":  # the column holds the method's coefficient (Kendall's tau was headed srcc)
        allp = allp.rename(columns={"srcc": method})
    report.tables.append(Table("All pairs", allp,
                               f"Every pair, most alike first; n_common_archs is how many architectures the value "
                               f"rests on (below {min_overlap} it is marked and not used in the summaries).",
                               float_format="{:.4f}"))
    return report


def energy_table(wide: pd.DataFrame, energy: pd.DataFrame) -> pd.DataFrame:
    """Per device with energy (``energy``: device, key, energy_mj, energy_method as ``Store.energies`` gives):
    how many architectures, median mJ per inference, median power (mJ / ms = W: an implausible one betrays a
    wrong meter), and whether energy ranks the architectures as latency does (SRCC on the ones with both)."""
    from scipy.stats import spearmanr

    rows = []
    for device, g in energy.groupby("device", sort=True):
        mj = g.set_index("key").energy_mj
        lat = wide[device].reindex(mj.index) if device in wide.columns else pd.Series(np.nan, index=mj.index)
        both = lat.notna() & (lat > 0)
        r = spearmanr(mj[both], lat[both]).statistic if both.sum() >= 3 and mj[both].nunique() > 1 else np.nan
        rows.append({"device": device, "method": ", ".join(sorted(set(g.energy_method))), "architectures": len(mj),
                     "median mJ / inference": float(mj.median()),
                     "median W": float((mj[both] / lat[both]).median()) if both.any() else np.nan,
                     "SRCC energy vs latency": float(r)})
    return pd.DataFrame(rows)


def _degenerate(lat: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Architectures that would stretch the axes for nothing: chance-level accuracy or a latency far below the
    rest (NAS-Bench-201's cells with every path cut: 1 % on CIFAR-100 at 0.011 ms, 2.6 % of the space)."""
    return (acc < 0.25 * np.median(acc)) | (lat < np.median(lat) / 50)


def timeline(measurements: pd.DataFrame) -> Figure | None:
    """Per-device campaign timeline: one row per device, one tick per model attempt (ok, failed, lost),
    so a farm's idle devices, stalls and lost hosts are visible at a glance."""
    m = measurements.dropna(subset=["started_at"])
    if m.empty:
        return None
    start = pd.to_datetime(m["started_at"], utc=True, format="ISO8601")
    t0 = start.min()
    x0 = (start - t0).dt.total_seconds().to_numpy()
    width = m["duration_s"].fillna(0).to_numpy()
    devices = sorted(m["device"].unique())
    row = {d: i for i, d in enumerate(devices)}
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(devices)))
    kinds = [("ok", "#4c72b0", m["status"].eq("ok")),
             ("failed", "#dd8452", m["status"].eq("failed") & m["failure_kind"].ne("device_lost")),
             ("device lost", "#c44e52", m["failure_kind"].eq("device_lost"))]
    least = 2e-3 * (x0.max() + 1)  # a bar stays visible however short the attempt
    dev_of = m["device"].to_numpy()
    for label, colour, mask in kinds:
        idx = np.flatnonzero(mask.to_numpy())
        if len(idx):
            # one call per device and status: one per attempt rescaled the axes each time (4.6 s for a report of
            # 200 measurements, 108 s for 15,600, none in 400 s for 90,000)
            for d in sorted(set(dev_of[idx])):
                mine = idx[dev_of[idx] == d]
                ax.broken_barh(list(zip(x0[mine], np.maximum(width[mine], least))), (row[d] - 0.35, 0.7),
                               color=colour)
            ax.plot([], [], color=colour, lw=6, label=label)
    ax.set_yticks(range(len(devices)), [_short(d) for d in devices])
    ax.set_xlabel(f"seconds since {t0:%Y-%m-%d %H:%M:%S} UTC")
    ax.invert_yaxis()
    ax.legend(loc="upper right", fontsize=8, frameon=False, ncol=3)
    fig.tight_layout()
    n_camp = m["campaign_id"].nunique()
    return Figure("timeline", "Campaign timeline per device", _png(fig),
                  f"{len(m)} model attempts in {n_camp} campaign(s); each bar spans export, push and timing",
                  "One row per measured device, time left to right: blue bars are models measured, orange "
                  "failures, red a model in flight when its host was lost. Gaps are idle time; a row that ends "
                  "early is a device that stopped.")


def sentinel_series(checks: pd.DataFrame) -> Figure:
    """Each sentinel's latency over the campaign, relative to its baseline: drift (thermal throttling, a
    frequency step, a noisy neighbour) shows as every sentinel leaving zero together; checks out of band are
    marked, and the models measured since the last good check were marked suspect."""
    devices = sorted(checks["device"].unique())
    fig, axes = plt.subplots(len(devices), 1, figsize=(10, 2.6 * len(devices) + 0.6), squeeze=False)
    for ax, dev in zip(axes[:, 0], devices):
        d = checks[checks["device"] == dev]
        for key, g in d.groupby("key", sort=True):
            dev_pct = 100 * (g["median_ms"] / g["baseline_ms"] - 1)
            ax.plot(g["models_done"], dev_pct, marker=".", lw=1, label=f"{key[:28]} ({g['baseline_ms'].iloc[0]:.3g} ms)")
            bad = g["in_band"].eq(0).to_numpy()
            if bad.any():
                ax.scatter(g["models_done"].to_numpy()[bad], dev_pct.to_numpy()[bad], s=40, facecolors="none",
                           edgecolors="#c44e52", zorder=3)
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_title(_short(dev, 80), fontsize=9, loc="left")
        ax.set_ylabel("vs baseline (%)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    axes[-1, 0].set_xlabel("models measured in the campaign")
    fig.tight_layout()
    n_out = int(checks["in_band"].eq(0).sum())
    return Figure("sentinel_series", "Sentinel series per device", _png(fig),
                  f"{len(checks)} sentinel checks, {n_out} out of band (red circles); pauses re-check at the same "
                  "model count",
                  "Each line is one fixed reference model re-timed every few models, as a percentage of its first "
                  "(baseline) timing. Flat lines near zero: the device kept its speed. Lines leaving zero together: "
                  "the device drifted (heat, frequency, another job); models measured in that window are marked "
                  "suspect in the store, and `harness export --drift-correct` can rescale them.")


def pareto_figure(result: ParetoResult) -> Figure:
    """Target latency vs accuracy: all architectures, the target's front and the fronts found by proxy/predictor.
    Off-scale architectures (near-chance accuracy or near-zero latency) are left off the axes (counted in the caption;
    not "degenerate", which elsewhere means a constant output); the legend sits below the plot."""
    frame = result.frame
    target, proxy, acc_col = result.target, result.proxy, result.accuracy
    lat, acc = frame[target].to_numpy(), frame[acc_col].to_numpy()
    odd = _degenerate(lat, acc)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.scatter(lat[~odd], acc[~odd], s=4, color="#bbbbbb", label="all compared architectures", linewidths=0)
    styles = [("proxy_front", f"front found with proxy {proxy}", "#d62728", "o"),
              ("predicted_front", f"front found with {result.predicted_from or 'the predictor'}", "#1f77b4",
               "s")]
    fronts = result.fronts()
    tf = np.array([i for i in result.proxy_front.target_front if not odd[i]], dtype=int)
    order = np.argsort(lat[tf])
    ax.step(lat[tf][order], acc[tf][order], where="post", color="black", lw=1.5, label=f"true front on {target}")
    for key, label, colour, marker in styles:
        if key in fronts:
            idx = np.array([i for i in fronts[key].proxy_front if not odd[i]], dtype=int)
            ax.scatter(lat[idx], acc[idx], s=22, facecolors="none", edgecolors=colour, marker=marker,
                       label=f"{label} (recall {fronts[key].recall:.2f}, HV {fronts[key].hv_ratio:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel(f"{target} latency (ms, measured)")
    ax.set_ylabel(acc_col)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    fig.tight_layout()
    caption = ("Each front is chosen with one latency (the proxy's, or predicted) and plotted at the target's "
               "measured latency.")
    if odd.any():
        caption += (f" {int(odd.sum())} off-scale architecture(s) (near-chance accuracy or near-zero latency, "
                    "e.g. cells whose every path is cut) are left off the axes; they still count in the metrics.")
    return Figure("pareto_fronts", "Pareto fronts judged on the target", _png(fig), caption,
                  how_to_read="The black staircase is the best accuracy reachable at each latency on the target. "
                              "Circles on or near it mean the proxy picked the right architectures; circles far to "
                              "the right of it are picks that are slower on the target than needed for their "
                              "accuracy.")


def pareto_report(result: ParetoResult, space: str) -> Report:
    report = Report(f"Pareto validation — {result.proxy} → {result.target}", space)
    report.facts = [f"accuracy: {result.accuracy}; latencies judged on {result.target}'s measured values",
                    f"{result.proxy_front.n_archs} architectures with {result.proxy}, {result.target} and "
                    "the accuracy"]
    rows = [{"front from": k.replace("_front", ""), **c.summary()} for k, c in result.fronts().items()]
    report.tables.append(Table("Summary", pd.DataFrame(rows),
                               "recall: share of the target's true front that the front found with the proxy "
                               "(or predictor) contains; HV ratio: area under its staircase over the true one (1 = "
                               "as good); regret: extra target latency paid for the same accuracy."))
    report.figures.append(pareto_figure(result))
    levels = pd.DataFrame(result.proxy_front.per_level)
    if not levels.empty:
        levels = levels.assign(regret_pct=100 * levels.regret_ms / levels.best_ms)
        levels = levels.sort_values("accuracy", ascending=False)
    report.tables.append(Table("Latency regret per accuracy level (proxy front)", levels,
                               "One row per architecture on the target's true front, most accurate first: best_ms "
                               "is its target latency, proxy_front_ms the fastest proxy-front pick at least as "
                               "accurate, regret the difference (– when no pick reaches that accuracy)."))
    return report
