"""`harness train | suggest | adapt | predict | pareto`: the OneProxy / AdaProxy loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from harness.analysis import methods, sampling
from harness.cli.common import (DEFAULT_CACHE, DEFAULT_STORE, CacheOpt, StoreOpt, cli_errors, console, err, esc,
                                names_list, one_name, print_json, print_table, table_path, working)

SpaceOpt = Annotated[str, typer.Option(help="Search space.")]
ProxyOpt = Annotated[Optional[list[str]], typer.Option(
    "--proxy", "-p", callback=names_list, help="Proxy device(s) with data in the space (repeat or comma-separate), "
    "or `all` (the default: every device "
    "with data but the target).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
MethodOpt = Annotated[str, typer.Option(help="Transfer method: " + "; ".join(
    f"{name}" for name in methods.METHODS) + f" (default {methods.DEFAULT_METHOD}).")]


def _context(st, space: str, cache_dir: Path, step):
    """The workflow context, with the graph-feature builds (the slow part) shown on the progress line."""
    from harness.analysis import workflow

    ctx = workflow.open_context(st, space, str(cache_dir))
    ctx.graph.on_progress = lambda done, total: step("building architectures for their graph features", done,
                                                     total)
    return ctx


def print_notes(ctx) -> None:
    """What the workflow noted for the user (proxies left out, ...), once each, on stderr: --json stays clean."""
    for note in dict.fromkeys(ctx.notes):
        err.print(f"({esc(note)})", highlight=False)


@cli_errors
def train(
    device: Annotated[str, typer.Option("--device", "-d", callback=one_name,
                                        help="Device whose measurements to learn from.")],
    space: SpaceOpt = "nb201", as_json: JsonOpt = False, store: StoreOpt = DEFAULT_STORE,
    cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Train a device's own latency predictor (ridge on one-hot + graph features) and save it in the store."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.analysis import workflow
        from harness.results.store import Store

    with Store(store) as st, working(f"training {device}'s predictor") as step:
        r = workflow.train(_context(st, space, cache_dir, step), device)
    if as_json:
        print_json(r.to_json())
        return
    h = r.holdout_srcc
    console.print(f"trained predictor #{r.id} for {esc(device)} on {r.n_archs} {space} architectures"
                  + (f"; SRCC {h:.4f} ({r.holdout_how}, {r.holdout_n} architectures)" if h is not None else
                     " (too few to estimate its quality)"), highlight=False)


@cli_errors
def suggest(
    proxy: ProxyOpt = None,
    samples: Annotated[int, typer.Option(min=1, help="How many architectures to measure on the target (K).")] = 20,
    space: SpaceOpt = "nb201",
    strategy: Annotated[str, typer.Option(help=f"One of {', '.join(sampling.STRATEGIES + sampling.SEQUENTIAL)}; "
                                                "uncertain: the next ones for a --target with at least "
                                                f"{sampling.MIN_FOR_UNCERTAIN} measurements, where its predictor "
                                                "is least sure.")] = sampling.DEFAULT_STRATEGY,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the choices: a different draw per seed (diverse starts at "
                                           "the median-latency architecture with 0, at a random one otherwise).")] = 0,
    target: Annotated[Optional[str], typer.Option(
        callback=one_name, help="Skip what this device already has.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        callback=table_path, help="Write the picks (key columns) to this CSV.")] = None,
    as_json: JsonOpt = False, store: StoreOpt = DEFAULT_STORE, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Pick which K architectures to measure on a new target so the proxy's ranking transfers best."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.analysis import workflow
        from harness.results.export import write_table
        from harness.results.store import open_store

    with open_store(store, write=False) as st, working(f"choosing {samples} architectures") as step:
        ctx = _context(st, space, cache_dir, step)
        picks = workflow.suggest(ctx, proxy or ["all"], samples, strategy, seed, target)
        new_target = target is not None and target not in ctx.devices_with_data()
    print_notes(ctx)
    if new_target:  # a new device, or a typo: either way nothing was skipped, so say so
        err.print(f"(--target {esc(target)} has no {space} measurements in the store: nothing to skip)",
                  highlight=False)
    if out:
        write_table(picks, out)
    if as_json:
        print_json(picks.to_dict(orient="records"))
    else:
        table = Table(title=f"{len(picks)} {space} architectures to measure on the target ({strategy})")
        table.add_column("#", justify="right")
        for col in picks.columns:
            table.add_column(str(col), overflow="fold")
        for i, row in enumerate(picks.itertuples(index=False)):
            table.add_row(str(i + 1), *[escape(str(v)) for v in row])
        print_table(table)
        if picks.attrs.get("constant_output_left_out"):
            console.print(f"({picks.attrs['constant_output_left_out']} architectures whose network has a constant "
                          "output were not considered: measuring them teaches the predictor nothing)", highlight=False)
        if out:
            console.print(esc(f"wrote {out}; next: harness measure --device TARGET --space {space} --arch-file {out}"),
                          highlight=False)


# below this leave-one-out SRCC adapt says the predictor is weak: at K = 20 it warns on most targets ranked
# < 0.90 and few ranked >= 0.95 (`python benchmarks/transfer.py --k 20 --check-loo ...`)
LOW_LOO_SRCC = 0.9


@cli_errors
def adapt(
    target: Annotated[str, typer.Option(callback=one_name, help="Device with a few measurements in the store.")],
    proxy: ProxyOpt = None,
    space: SpaceOpt = "nb201",
    method: MethodOpt = methods.DEFAULT_METHOD,
    as_json: JsonOpt = False, store: StoreOpt = DEFAULT_STORE, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Fit the target's latency predictor from the proxies and exactly the target measurements in the store."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.analysis import workflow
        from harness.results.store import Store

    with Store(store) as st, working(f"adapting a predictor for {target}") as step:
        ctx = _context(st, space, cache_dir, step)
        r = workflow.adapt(ctx, proxy or ["all"], target, method)
    print_notes(ctx)
    if as_json:
        print_json(r.to_json())
        return
    if r.reused:
        console.print(f"predictor #{r.id} for {esc(target)} already fits these inputs (same method, proxies, proxy "
                      f"data and {r.n_target_samples} target samples): reused, nothing new saved", highlight=False)
    else:
        sources = f" and {len(r.proxies)} proxy device(s)" if method != "target-only" else " (no proxy: its own model)"
        console.print(f"adapted predictor #{r.id} for {esc(target)} ({r.why_new}): {esc(method)} from {r.n_target_samples} "
                      f"target samples{sources}", highlight=False)
    q = r.metrics
    if "loo_srcc" in q:
        console.print(f"  quality on the {r.n_target_samples} target samples ({q['loo_scheme']}, whole fit redone "
                      f"each time): SRCC [bold]{q['loo_srcc']:.3f}[/], median error "
                      f"{100 * q['loo_median_rel_error']:.1f} %", highlight=False)
        if q["loo_srcc"] < LOW_LOO_SRCC:
            why = "no source ranks {} alike and ".format(esc(target)) if method != "target-only" else ""
            console.print(f"  [yellow]low:[/] {why}{r.n_target_samples} samples pin "
                          f"little down (rankings of the rest may be off by as much). Measure more where it matters: "
                          f"`harness suggest --strategy uncertain --target {esc(target)}`, or let `harness transfer "
                          f"--target {esc(target)}` measure until the accuracy-latency front is settled.",
                          highlight=False)
    if "sources_used" in r.metrics:
        how = (f"ensemble: {', '.join(r.metrics['parts'])}" if "parts" in r.metrics
               else f"one-hot weight {r.metrics['onehot_weight']}")
        console.print(f"  sources used: {esc(', '.join(r.metrics['sources_used']))}; {esc(how)}", highlight=False)


@cli_errors
def predict(
    device: Annotated[str, typer.Option("--device", "-d", callback=one_name,
                                        help="Device with a trained or adapted predictor.")],
    space: SpaceOpt = "nb201",
    out: Annotated[Optional[Path], typer.Option(
        callback=table_path, help="CSV/Parquet with key columns and predicted_ms.")] = None,
    as_json: JsonOpt = False, store: StoreOpt = DEFAULT_STORE, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Predict the device's latency for every architecture of the space (those in the store if it is huge)."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.analysis import workflow
        from harness.results.export import write_table
        from harness.results.store import open_store

    with open_store(store, write=False) as st, working(f"predicting {device}") as step:
        df = workflow.predict(_context(st, space, cache_dir, step), device)
    if out:
        write_table(df, out)
    if as_json:
        print_json(df.to_dict(orient="records"))
        return
    console.print(f"{esc(device)}: predicted {len(df)} {esc(space)} architectures with the latest "
                  f"{esc(df.attrs['predictor'])}; median {df.predicted_ms.median():.3f} ms, "
                  f"range {df.predicted_ms.min():.3f}-{df.predicted_ms.max():.3f} ms"
                  + (f"; wrote {esc(out)}" if out else ""), highlight=False)
    if df.attrs.get("not_positive"):
        linear = " is linear in ms and" if df.attrs.get("method") == "adaproxy" else ""  # another's code: unknown
        console.print(f"  [yellow]{len(df.attrs['not_positive'])} prediction(s) were at or below 0 ms[/] (the "
                      f"{esc(df.attrs.get('method'))} predictor{linear} extrapolates there): shown tied "
                      f"at {df.predicted_ms.min():.3g} ms, the fastest; treat them as unknown (search leaves them "
                      "out), or adapt with --method multiproxy (log-latency)", highlight=False)


@cli_errors
def pareto(
    proxy: Annotated[str, typer.Option("--proxy", "-p", callback=one_name, help="Proxy device.")],
    target: Annotated[str, typer.Option(callback=one_name,
                                        help="Target device (its measured latencies are the judge).")],
    accuracy: Annotated[str, typer.Option(help="Accuracy metric (an acc_* column imported with the data).")] = (
        "acc_cifar100_test_200ep"),
    space: SpaceOpt = "nb201",
    plot: Annotated[Optional[Path], typer.Option(help="Write an HTML report with both fronts plotted.")] = None,
    what_if_k: Annotated[Optional[int], typer.Option(
        "--what-if-k", help="Validation: pretend the (fully measured) target is new, adapt on K of its "
        "measurements and judge that predictor's front too (nothing saved).")] = None,
    adapt_proxy: Annotated[Optional[list[str]], typer.Option(
        callback=names_list,
        help="Proxies for --what-if-k (repeat or comma-separate, or `all`); default: --proxy.")] = None,
    method: MethodOpt = methods.DEFAULT_METHOD,
    as_json: JsonOpt = False, store: StoreOpt = DEFAULT_STORE, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Does the proxy's Pareto set (accuracy vs latency) hold on the target? Recall, hypervolume, regret."""
    with working("loading"):  # the imports take seconds on a busy machine: show it
        from harness.analysis import workflow
        from harness.results.store import open_store

    with open_store(store, write=False) as st, working(f"checking the Pareto set of {proxy} on {target}") as step:
        ctx = _context(st, space, cache_dir, step)
        r = workflow.pareto(ctx, proxy, target, accuracy, what_if_k, adapt_proxy, method)
    print_notes(ctx)
    checks = {k: c.summary() for k, c in r.fronts().items()}
    if plot:
        from harness.analysis.report import pareto_report

        with working(f"drawing {plot}"):
            pareto_report(r, space).write(plot)
    if as_json:
        print_json({"proxy": proxy, "target": target, "accuracy": accuracy, **checks,
                    "archs": len(r.frame), "proxy_archs": r.proxy_archs,
                    "predicted_in_sample": r.predicted_in_sample})
        return
    table = Table(title=esc(f"Pareto check on {target} ({space}, {accuracy}, {r.proxy_front.n_archs} archs)"))
    for col in ("front from", "size", "recall", "HV ratio", "mean regret ms", "max regret ms", "mean regret %"):
        table.add_column(col, justify="left" if col == "front from" else "right")
    # short row labels (a device name or "adaproxy fit on 20 of X's measurements" folded the column at 80);
    # what each front is made from is said under the table
    labels = {"proxy_front": "proxy", "predicted_front": "predicted"}
    for k, c in checks.items():
        table.add_row(esc(labels[k]), str(c["proxy_front_size"]), f"{c['recall']:.3f}", f"{c['hv_ratio']:.4f}",
                      f"{c['regret_ms_mean']:.3f}", f"{c['regret_ms_max']:.3f}", f"{100 * c['regret_rel_mean']:.1f}")
    print_table(table)
    console.print(f"proxy: the front by {esc(proxy)}'s latencies"
                  + (f"; predicted: by {esc(r.predicted_from or 'the predictor')}" if "predicted_front" in checks
                     else "") + f"; target front: {checks['proxy_front']['target_front_size']} architectures"
                  + (f"; wrote {esc(plot)}" if plot else ""), highlight=False)
    n = len(r.frame)
    if r.proxy_archs and n < r.proxy_archs / 2:  # a front among 20 measured architectures is no front of the space
        console.print(f"[yellow]partial:[/] judged on the {n} architectures {esc(target)} has latencies for ({esc(proxy)} "
                      f"has {r.proxy_archs}): recall and HV are of the fronts within those {n}", highlight=False)
    if r.predicted_in_sample:
        console.print(f"[yellow]in-sample:[/] the saved predictor was fitted on {r.predicted_in_sample} of these {n} "
                      "architectures, so its front is judged on its own training data: no validation of it "
                      "(--what-if-k K on a fully measured target is one)", highlight=False)
