"""`harness import | srcc | proxy | report`: public data in, cross-device evidence out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import (DEFAULT_STORE, StoreOpt, cli_errors, console, err, esc, html_path, names_list,
                                print_json, print_table, table_width, working)
from harness.errors import HarnessError
from harness.paths import WORKSPACE

SpaceOpt = Annotated[str, typer.Option(help="Search space.")]
DevicesOpt = Annotated[Optional[list[str]], typer.Option(
    "--device", callback=names_list,
    help="Only these devices (repeat or comma-separate); default: every device with data in the space.")]
def _correlation(value: str) -> str:
    if value not in ("spearman", "kendall"):
        raise typer.BadParameter(f"{value!r} is not one of spearman, kendall")
    return value


MethodOpt = Annotated[str, typer.Option(callback=_correlation,
                                        help="spearman (SRCC, average ranks for ties) or kendall (tau-b).")]
CiOpt = Annotated[int, typer.Option("--ci", min=0, max=10_000, help="Bootstrap resamples for 95% confidence intervals (0 = none; "
                                                 "200 is a good start).")]


@cli_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="Tidy CSV / CSV.GZ / Parquet files (format of ../shared/data).")],
    source: Annotated[Optional[str], typer.Option(help="Provenance label; default: the file name.")] = None,
    space: Annotated[Optional[str], typer.Option(help="Space, if the key columns don't say.")] = None,
    allow_zero: Annotated[bool, typer.Option(
        "--allow-zero", help="Import 0 ms latencies as 0 (by default they are refused: 0 ms usually marks a "
        "failed or missing measurement).")] = False,
    prefix: Annotated[str, typer.Option(
        help="Put this before every device name (e.g. vm-: local-onnx_ms becomes vm-local-onnx): to keep a copy of "
        "a device this store also measures, or two tables' devices of one name apart.")] = "",
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Import public latency tables: each <device>_ms column becomes an imported device.

    acc_* columns become accuracy metrics, other numeric columns metadata. A file is imported whole or
    not at all; identical values merge, conflicting ones are an error naming both sources.
    """
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.results.importer import import_table
        from harness.results.store import Store

    failed: list[Path] = []
    with Store(store) as st:
        for f in files:
            try:
                with working(f"importing {f.name}"):
                    r = import_table(st, f, source=source, space=space, allow_zero=allow_zero, prefix=prefix)
            except (HarnessError, OSError) as e:
                if len(files) == 1:
                    raise
                # each file is whole or nothing; the others go on (the first bad one stopped the rest unsaid)
                where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
                err.print(f"[bold red]error:[/] {esc(where)}{esc(e if isinstance(e, HarnessError) else e.strerror)}",
                          highlight=False)
                failed.append(f)
                continue
            for w in r.warnings:
                err.print(f"[yellow]warning:[/] {escape(w)}")
            if r.skipped_file:
                console.print(f"{esc(f)}: already imported; nothing changed", highlight=False)
                continue
            console.print(f"{esc(f)}: {r.space}, {r.rows} architectures, {len(r.devices)} device(s) "
                          f"({esc(', '.join(r.devices))}); {r.new_values} new values, {r.already_present} already "
                          f"present; metrics: {esc(', '.join(r.metrics) or 'none')}", highlight=False)
    if failed:
        err.print(f"[bold red]{len(failed)} of {len(files)} files not imported[/] ({esc(', '.join(map(str, failed)))}); "
                  "the others were, each whole", highlight=False)
        raise typer.Exit(2)


def _colour(v: float) -> str:
    if v != v:
        return "[dim]–[/]"
    style = "green" if v >= 0.9 else "yellow" if v >= 0.7 else "red"
    return f"[{style}]{v:.2f}[/]"


DEFAULT_MIN_OVERLAP = 30  # harness.analysis.correlation.DEFAULT_MIN_OVERLAP, not imported: --help stays light
UNDEFINED_DRAWS_NOTE = 0.05  # srcc --ci names pairs with more of their resamples undefined than this
MinOverlapOpt = Annotated[int, typer.Option(
    "--min-overlap", min=2, help="Pairs with fewer common architectures are shown with their n, masked and left out "
    "of summaries (an SRCC on a handful of architectures is noise).")]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cell(v: float, n: int, min_overlap: int) -> str:
    if n < min_overlap and v == v:
        return f"[dim]n={n}[/]"
    return _colour(v)


def _matrix_table(corr, order: list[str], label: str, space: str, min_overlap: int) -> Table:
    m, n = corr.matrix(), corr.overlap()
    table = Table(title=f"{label}, {esc(space)}: {len(order)} devices (clustered order; columns numbered as rows)")
    table.add_column("#", justify="right")
    table.add_column("device", no_wrap=True)
    for i in range(len(order)):
        table.add_column(str(i + 1), justify="right", no_wrap=True)
    for i, a in enumerate(order):
        table.add_row(str(i + 1), escape(a), *[_colour(1.0) if a == b else _cell(m.loc[a, b], n.loc[a, b], min_overlap)
                                               for b in order])
    return table


def _pairs_tables(reliable, label: str, ci: bool, weakest: int = 10, strongest: int = 5) -> list[Table]:
    """The narrow-terminal view: ranked pair lists instead of an n x n matrix."""
    out = []
    ranked = reliable.sort_values("srcc")
    for title, rows in ((f"weakest pairs ({label})", ranked.head(weakest)),
                        (f"strongest pairs ({label})", ranked.tail(strongest).iloc[::-1])):
        if len(ranked) <= weakest and "strongest" in title:
            break  # the first list already shows every pair
        table = Table(title=title)
        table.add_column(label, justify="right", no_wrap=True)
        table.add_column("device a", overflow="fold")
        table.add_column("device b", overflow="fold")
        table.add_column("archs", justify="right", no_wrap=True)
        if ci:
            table.add_column("95% CI", no_wrap=True)
        for r in rows.itertuples():
            cells = [_colour(r.srcc), escape(r.device_a), escape(r.device_b), str(r.n_common_archs)]
            if ci:
                cells.append(f"{r.ci_low:.2f}–{r.ci_high:.2f}")
            table.add_row(*cells)
        out.append(table)
    return out


@cli_errors
def srcc(
    space: SpaceOpt = "nb201",
    device: DevicesOpt = None,
    method: MethodOpt = "spearman",
    ci: CiOpt = 0,
    min_overlap: MinOverlapOpt = DEFAULT_MIN_OVERLAP,
    layout: Annotated[str, typer.Option(
        help="matrix (heat map), pairs (weakest and strongest pairs) or auto: the matrix when the terminal is "
             "wide enough.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of pairs instead of the heat map.")] = False,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Bootstrap seed.")] = 0,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Rank correlation of latencies for every pair of devices, on the architectures both have."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness import analysis
        from harness.analysis.correlation import MIN_COMMON, correlate
        from harness.analysis.report import cluster_order
        from harness.results.store import open_store

    if layout not in ("auto", "matrix", "pairs"):
        raise HarnessError(f"--layout must be auto, matrix or pairs, not {layout!r}")
    with open_store(store, write=False) as st, working("correlating" + (f" with {ci} bootstrap resamples" if ci else "")):
        wide = analysis.latencies(st, space, device)
        if wide.shape[1] < 2:  # a correlation needs a pair: say so instead of an empty table
            have = sorted(set(st.latencies(space).device))
            if device and len(have) >= 2:  # the space has pairs; the selection named one
                raise HarnessError(f"SRCC compares devices in pairs, and --device selected only "
                                   f"{', '.join(wide.columns) or 'devices without data'}; name at least two, or leave "
                                   f"--device out for all {len(have)} with {space} data ({', '.join(have[:8])}"
                                   f"{', ...' if len(have) > 8 else ''})")
            raise HarnessError(f"SRCC compares devices in pairs, and {space} has "
                               f"{'only ' + ', '.join(wide.columns) if wide.shape[1] else 'no device'}"
                               f"; devices with {space} data: {', '.join(have) or '(none)'}"
                               " (measure or import another)")
        corr = correlate(wide, method=method, n_boot=ci, seed=seed)
        if ci and method == "spearman":  # measured devices: the interval also resamples each model's runs and rounds
            from harness.measure.confidence import with_run_noise

            corr.pairs = with_run_noise(st, space, wide, corr.pairs, ci, seed)
    if as_json:
        # the value column is `srcc` whichever --method (scripts read one name); `method` says which it is
        records = corr.pairs.assign(low_overlap=corr.pairs.n_common_archs < min_overlap, method=method)
        print_json(records.to_dict(orient="records"))
        return
    label = "SRCC" if method == "spearman" else "Kendall tau"
    order = cluster_order(corr.matrix(min_overlap))
    reliable = corr.reliable(min_overlap)
    low = corr.pairs[corr.pairs.srcc.notna() & (corr.pairs.n_common_archs < min_overlap)]
    table = _matrix_table(corr, order, label, space, min_overlap)
    needs = table_width(table)
    if layout == "matrix" and needs > console.width:  # forced: drawn at its own width (the terminal wraps or
        from rich.console import Console              # `less -S` scrolls) instead of squeezing # and names away

        print_table(table, to=Console(width=needs, file=console.file, force_terminal=console.is_terminal,
                                      color_system=console.color_system, highlight=False))
    elif layout == "matrix" or (layout == "auto" and needs <= console.width):
        print_table(table)
    else:
        if layout == "auto":
            console.print(f"[dim]the {len(order)}×{len(order)} heat map needs {needs} columns and this terminal has "
                          f"{console.width}: ranked pairs instead (--layout matrix to force it; harness report "
                          "draws it)[/]", highlight=False)
        for t in _pairs_tables(reliable, label, bool(ci)):
            print_table(t)
    n_pairs = len(corr.pairs.dropna(subset=["srcc"]))
    if len(reliable):
        lo = reliable.loc[reliable.srcc.idxmin()]
        console.print(f"{plural(n_pairs, 'pair')}; weakest: {esc(lo.device_a)} vs {esc(lo.device_b)} = "
                      f"{lo.srcc:.4f} on {lo.n_common_archs} architectures. --json for all pairs"
                      + (" with confidence intervals" if ci else ""), highlight=False)
    elif n_pairs:
        console.print(f"{plural(n_pairs, 'pair')}, none on {min_overlap} or more common architectures: lower "
                      "--min-overlap to compare them anyway.", highlight=False)
    if len(low):
        console.print(f"[yellow]{plural(len(low), 'pair')} on fewer than {min_overlap} common architectures[/] "
                      f"(n={', '.join(str(v) for v in sorted(set(low.n_common_archs)))}): shown with their n, left "
                      "out of the summary (--min-overlap to change).", highlight=False)
    if ci and "ci_undefined" in corr.pairs:  # nanquantile dropped them without a word (39 % on a near-constant device)
        partial = corr.pairs[corr.pairs.ci_undefined > UNDEFINED_DRAWS_NOTE]
        for r in partial.head(5).itertuples():
            console.print(f"[yellow]{esc(r.device_a)} vs {esc(r.device_b)}[/]: {r.ci_undefined:.0%} of the resamples "
                          "had no value (a device with nearly all-equal latencies): its interval describes the rest "
                          "only", highlight=False)
        if len(partial) > 5:
            console.print(f"[yellow]{len(partial) - 5} more pair(s)[/] likewise (--json: ci_undefined)",
                          highlight=False)
    unknown = corr.pairs[corr.pairs.srcc.isna()]
    if len(unknown):  # shown as – in the tables: say why, pair by pair
        few = int((unknown.n_common_archs < MIN_COMMON).sum())
        why = [f"{plural(few, 'pair')} on fewer than {MIN_COMMON} common architectures"] if few else []
        if len(unknown) > few:
            why.append(f"{plural(len(unknown) - few, 'pair')} where a device's latencies are all equal on the common "
                       "ones")
        console.print(f"no {label} (–) for {'; '.join(why)}.", highlight=False)


@cli_errors
def compare(
    device_a: Annotated[str, typer.Argument(help="A device with data in the space.")],
    device_b: Annotated[str, typer.Argument(help="Another device.")],
    space: SpaceOpt = "nb201",
    ci: Annotated[int, typer.Option("--ci", min=1, max=10_000, help="Bootstrap resamples of each measured model's runs.")] = 200,
    top: Annotated[int, typer.Option(min=0, help="List this many real disagreements (0: none).")] = 10,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Bootstrap seed.")] = 0,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Which architecture pairs two devices order differently, and which of those measurement noise explains.

    A pair is *indistinguishable* on a measured device when the 95 % CIs of the two models' latencies
    (resampled runs and rounds) overlap; flips between such pairs are noise, the rest are real disagreements.
    """
    from harness import analysis
    from harness.analysis.data import arch_labels
    from harness.measure.confidence import compare as cmp
    from harness.measure.confidence import model_ci, run_noise, srcc_with_noise
    from harness.results.store import open_store

    if device_a == device_b:
        raise HarnessError(f"compare needs two different devices; got {device_a!r} twice (to see how repeatable "
                             "one device is, measure it again into another store and compare the two)")
    with open_store(store, write=False) as st:
        wide = analysis.latencies(st, space, [device_a, device_b])
        noise = run_noise(st, space, [device_a, device_b], ci, seed)
        labels = arch_labels(st, space)
    cis = {d: model_ci(x) for d, x in noise.items() if not x.empty}
    common = len(wide.dropna())
    if common == 0:
        raise HarnessError(f"{device_a} and {device_b} have no {space} architecture in common: nothing to compare; "
                           "measure (or import) the same architectures on both: `harness export --device` one of "
                           "them gives its keys for `harness measure --arch-file` on the other")
    with working(f"comparing {common:,} architectures pair by pair"):
        r = cmp(wide, device_a, device_b, cis, top)
    pair = srcc_with_noise(wide, noise, ci, seed)
    flat = [d for d in (device_a, device_b) if wide.dropna()[d].nunique() == 1]
    if flat:  # a constant device: "SRCC nan (95% CI nan..nan)" after two numpy warnings before
        console.print(f"{device_a} vs {device_b}: no SRCC: {' and '.join(flat)}'s latencies are all equal on the "
                      f"{common} common architecture(s), so {'they rank' if len(flat) == 2 else 'it ranks'} nothing",
                      highlight=False)
    elif len(pair):
        p = pair.iloc[0]
        console.print(f"{device_a} vs {device_b}: SRCC {p.srcc:.4f} (95% CI {p.ci_low:.4f}..{p.ci_high:.4f}, runs "
                      f"resampled for: {p.noise_resampled}) on {r['architectures']} architectures", highlight=False)
        if common < DEFAULT_MIN_OVERLAP:  # srcc and proxy mask such pairs; compare said nothing
            console.print(f"[yellow]only {common} architectures in common[/]: an SRCC on fewer than "
                          f"{DEFAULT_MIN_OVERLAP} says little (srcc and proxy leave such pairs out of their summaries)",
                          highlight=False)
    else:
        console.print(f"{device_a} vs {device_b}: {common} architecture(s) in common, too few for an SRCC",
                      highlight=False)
    for d, n in r["indistinguishable"].items():
        console.print(f"  {d} cannot tell apart {n} of {r['pairs']} pairs (overlapping 95% CIs)", highlight=False)
    unknown = [d for d in (device_a, device_b) if d not in r["indistinguishable"]]
    if unknown:  # imported tables keep no runs: their noise cannot tell a flip from a real disagreement
        known = [d for d in (device_a, device_b) if d not in unknown]
        console.print(f"  {r['flipped']} pairs ordered differently"
                      + (f"; {r['flipped_within_noise']} of them within {known[0]}'s measurement noise" if known else "")
                      + f"; how many the noise of {' and '.join(unknown)} explains is unknown (no runs in the store: "
                      "an imported table keeps one value per architecture)", highlight=False)
    else:
        console.print(f"  {r['flipped']} pairs ordered differently: {r['flipped_within_noise']} within measurement "
                      f"noise, {r['real']} real disagreements", highlight=False)
    if r["real_disagreements"]:
        table = Table(title=f"largest {'' if unknown else 'real '}disagreements (top {top})")
        for col in ("architecture 1", "architecture 2", f"{device_a} ms", f"{device_b} ms"):
            table.add_column(col)
        for _, k1, k2, a1, a2, b1, b2 in r["real_disagreements"]:
            table.add_row(escape(labels.get(k1, k1)), escape(labels.get(k2, k2)), f"{a1:.3f} / {a2:.3f}",
                          f"{b1:.3f} / {b2:.3f}")
        print_table(table)


@cli_errors
def proxy(
    targets: Annotated[list[str], typer.Option(
        "--target", "-t", "--targets", callback=names_list,
        help="Target device(s) (repeat or comma-separate). --targets is the old spelling.")],
    candidate: Annotated[Optional[list[str]], typer.Option(
        callback=names_list,
        help="Candidate proxies (repeat or comma-separate); default: every other device with data.")] = None,
    space: SpaceOpt = "nb201",
    method: MethodOpt = "spearman",
    ci: Annotated[int, typer.Option("--ci", min=0, max=10_000, help=(
        "Bootstrap resamples for 95% confidence intervals over the architectures (0 = none; 200 is a good start). "
        "Unlike srcc --ci they do not resample the measured devices' runs: a proxy's mean over targets is judged "
        "on which architectures were drawn."))] = 0,
    top: Annotated[int, typer.Option(min=1, help="Show the best N in the table (--json gives every candidate).")] = 10,
    min_overlap: MinOverlapOpt = DEFAULT_MIN_OVERLAP,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Rank candidate proxy devices by how well their latency ranking matches the targets' (mean and worst)."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness import analysis

    with working("ranking proxies" + (f" with {ci} bootstrap resamples" if ci else "")):
        df = analysis.proxies(store, targets, space, candidate, method=method, ci=ci, min_overlap=min_overlap)
    if len(df) and (df.targets_known == 0).all():  # nothing to rank: say why instead of a table of dashes (or nulls)
        if int(df.min_common_archs.max()) >= min_overlap:  # enough in common: the rankings themselves are missing
            raise HarnessError(f"no candidate has an SRCC with {', '.join(targets)} although they share up to "
                               f"{int(df.min_common_archs.max())} {space} architectures: latencies that are all equal "
                               "(on the target, or on every candidate) rank nothing; check what was measured or "
                               "imported for it (`harness export --device`)")
        raise HarnessError(f"no candidate shares {min_overlap} or more {space} architectures with "
                           f"{', '.join(targets)} (at most {int(df.min_common_archs.max())}), so none has an SRCC "
                           "to rank by; measure or import more of the target, or lower --min-overlap")
    if as_json:
        print_json(df.to_dict(orient="records"))
        return
    n_targets = len(dict.fromkeys(targets))
    partial = bool((df.targets_known < n_targets).any())
    table = Table(title=esc(f"proxies for {', '.join(targets)} ({space}, {method})"))
    cols = ("#", "proxy", "mean", "worst", "worst target", "archs") + (("targets",) if partial else ()) + (
        ("mean 95% CI",) if ci else ())
    for col in cols:
        table.add_column(col)
    for i, r in enumerate(df.head(top).itertuples()):
        cells = [str(i + 1), esc(r.proxy), _colour(r.mean_srcc), _colour(r.worst_srcc), esc(r.worst_target if isinstance(r.worst_target, str) else "-"),
                 str(r.min_common_archs) if r.min_common_archs == r.max_common_archs
                 else f"{r.min_common_archs}–{r.max_common_archs}"]
        if partial:
            cells.append(f"{r.targets_known}/{n_targets}")
        if ci:
            cells.append("-" if r.mean_ci_low != r.mean_ci_low else f"{r.mean_ci_low:.3f}–{r.mean_ci_high:.3f}")
        table.add_row(*cells)
    print_table(table)
    if len(df) > top:
        console.print(f"[dim]the best {top} of {len(df)} candidates (--top N for more)[/]", highlight=False)
    shown = df.head(top)
    if (shown.min_common_archs < shown.max_common_archs).any():
        console.print("[dim]archs a–b: a proxy's SRCCs to the targets rest on different architectures (each pair "
                      "on those both have), so its mean mixes them; `harness srcc` gives each pair with its count[/]",
                      highlight=False)
    if partial:
        console.print(f"[dim]a proxy sharing fewer than {min_overlap} architectures with a target (--min-overlap), or "
                      f"whose latencies or the target's are all equal, has no SRCC for it: its mean and worst cover "
                      f"the targets it is known for, so it ranks after every proxy known for more of them[/]",
                      highlight=False)


def _pairs(values: list[str] | None) -> list[tuple[str, str]] | None:
    if not values:
        return None
    out = []
    for v in values:
        a, sep, b = v.partition(":")
        if not sep or not a or not b:
            raise HarnessError(f"--pair wants DEVICE_A:DEVICE_B, got {v!r}")
        out.append((a, b))
    return out


@cli_errors
def report(
    out: Annotated[Path, typer.Option("--out", "-o", callback=html_path, help="HTML file to write (figures embedded).")] = (
        WORKSPACE.reports / "report.html"),
    png: Annotated[Optional[Path], typer.Option(help="Also write each figure as PNG into this folder.")] = None,
    space: SpaceOpt = "nb201",
    device: DevicesOpt = None,
    pair: Annotated[Optional[list[str]], typer.Option(
        callback=names_list, help="Scatter plot for A:B (repeat or comma-separate); default: the two most and two "
        "least correlated pairs.")] = None,
    method: MethodOpt = "spearman",
    min_overlap: MinOverlapOpt = DEFAULT_MIN_OVERLAP,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """HTML report of the store: SRCC heat map, scatter plots, distributions, campaign timelines.

    Clustered SRCC heat map, latency scatter for chosen pairs, per-device distributions, the campaign timeline
    of each measured device (a farm's idle, failed and lost stretches), where each device's numbers come from,
    and a 'how to read this' for every figure and table."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness import analysis
        from harness.results.store import open_store

    pairs = _pairs(pair)
    with open_store(store, write=False) as st, working(f"drawing the report ({space})"):
        path = analysis.report(st, out, space, device, pairs, png, method, min_overlap)
    console.print(f"wrote {esc(path)}" + (f" and PNG figures in {esc(png)}" if png else ""), highlight=False)
