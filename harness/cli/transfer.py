"""`harness transfer`: the closed loop: measure a new target only until its Pareto front is settled."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import (DEFAULT_CACHE, DEFAULT_DEVICES, DEFAULT_STORE, CacheOpt, DevicesDirOpt, StoreOpt,
                                cli_errors, console, err, esc, names_list, one_name, print_json, print_table,
                                reachable, table_path)

TargetOpt = Annotated[str, typer.Option(
    "--target", "-t", callback=one_name, help="Device profile to measure on (any driver, including kind replay).")]
SpaceOpt = Annotated[str, typer.Option(help="Search space (its architectures need accuracy in the store).")]
AccOpt = Annotated[Optional[str], typer.Option(help="Accuracy column (imported acc_*); default "
                                               "acc_cifar100_test_200ep when present.")]
ProxyOpt = Annotated[Optional[list[str]], typer.Option(
    "--proxy", "-p", callback=names_list,
    help="Source devices (repeat or comma-separate), default: all with data in the space except the target.")]


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None or v != v else format(v, spec)


def _round_table(r, title: str):
    """One round in ten narrow one-word columns, so it fits 80 columns and no number is cut (SRCC and err% are
    leave-one-out figures; E[HV] and E[rec] the expected hypervolume ratio and recall against the truth)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    values = [str(r.n_samples), _fmt(r.loo_srcc, ".3f"), _fmt(r.loo_error_pct, ".1f"), str(len(r.front)),
              _fmt(r.jaccard, ".2f"), _fmt(None if r.hv_change is None else 100 * r.hv_change, ".2f"),
              _fmt(r.expected_hv, ".4f"), _fmt(r.expected_recall, ".2f"), r.stop or str(len(r.next_batch)),
              f"{r.seconds:.1f}"]
    headers = ("K", "SRCC", "err%", "front", "Jacc.", "ΔHV%", "E[HV]", "E[rec]", "next", "s")
    for col, value in zip(headers, values):
        t.add_column(Text(col), justify="right", no_wrap=True, min_width=max(len(value), len(col)))
    t.add_row(*values)
    return t


WaitOpt = Annotated[bool, typer.Option(
    "--wait", help="If another campaign is measuring the target, wait for it instead of exiting (code 3).")]


def lease_args(wait: bool) -> dict:
    """run_campaign's lease settings for --wait, saying who is waited for (as measure does)."""
    return {"lease_wait": None if wait else 0.0,
            "on_lease_wait": lambda h: err.print(f"waiting: {esc(h.device)} is being measured by {esc(h.describe())}",
                                                 highlight=False)}


@cli_errors
def transfer(
    target: TargetOpt,
    space: SpaceOpt = "nb201",
    budget: Annotated[int, typer.Option(help="At most this many target measurements in all.")] = 50,
    accuracy: AccOpt = None,
    proxy: ProxyOpt = None,
    first_batch: Annotated[int, typer.Option(help="Architectures measured before the first fit.")] = 10,
    batch: Annotated[int, typer.Option(help="Architectures measured per later round.")] = 5,
    explore: Annotated[int, typer.Option(
        help="Until this many samples, batches follow the diverse order (what a fixed-K campaign measures); "
             "after it, where front membership is uncertain.")] = 20,
    explore_by: Annotated[str, typer.Option(
        help="How explore batches pick: diverse (the fixed-K order) or uncertain (where the predictor's ensemble "
             "disagrees, spread out: a better front on average, at more samples; see benchmarks/closed_loop.py).")
    ] = "diverse",
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the first batch and of the uncertainty draws.")] = 0,
    out: Annotated[Optional[Path], typer.Option(
        callback=table_path, help="Write the predicted front to this CSV/Parquet.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rounds and the front as JSON.")] = False,
    wait: WaitOpt = False,
    store: StoreOpt = DEFAULT_STORE, devices_dir: DevicesDirOpt = DEFAULT_DEVICES, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Closed loop on a new target: measure only until its predicted Pareto front is settled.

    Measure a first batch, adapt the multi-proxy predictor, estimate its uncertainty, measure next where it
    decides the accuracy-latency Pareto front, and stop when the predicted front is stable (or the budget is
    spent). Ctrl-C and rerun the same command to resume.

    The first --explore samples (default 20) follow the diverse sampling order in batches, so a loop that
    stops there has measured exactly what a fixed-K campaign of that size would; only then does it measure
    where the front is uncertain.

    Stops when, two rounds in a row, the front barely changed (Jaccard >= 0.9 with the last round's, or a
    hypervolume gain < 0.5 %) and its expected hypervolume ratio against the truth is >= 0.95 (estimated
    from the predictor's own leave-one-out error and jackknife spread).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from harness.analysis import closed_loop as cl
    from harness.analysis import transfer_loop as tl
    from harness.analysis.workflow import open_context
    from harness.campaign import run_campaign
    from harness.cli.measure import print_summary
    from harness.devices.registry import ProfileRegistry
    from harness.models.cache import ModelCache
    from harness.results.export import write_table
    from harness.results.store import Store

    cfg = cl.LoopConfig(first_batch=first_batch, batch=batch, budget=budget, seed=seed, explore=explore,
                        explore_by=explore_by)
    command = shlex.join(["harness", *sys.argv[1:]])
    with Store(store) as st:
        ctx = open_context(st, space, str(cache_dir))
        with console.status("checking the target and building the candidate pool ..."):
            plan = tl.plan_loop(ctx, ProfileRegistry(devices_dir), target, accuracy, proxy or ["all"], cfg)
        target = plan.target  # the series it measures: a profile with a batch-4 workload is NAME@bs4
        from harness.cli.predict import print_notes

        print_notes(ctx)
        if not as_json:
            console.print(f"[bold]{target}[/] ({plan.profile.connection.kind}): {len(plan.archs)} {space} candidates "
                          f"with {plan.accuracy_name}; {len(plan.pool.source_names)} source device(s)"
                          + (f" (left out as the target's own data: {', '.join(plan.excluded_sources)})"
                             if plan.excluded_sources else "") + f"; budget {budget}", highlight=False)
            if plan.constant_output:
                console.print(f"({plan.constant_output} candidates left out: their network's output is a constant)",
                              highlight=False)
            if plan.unanswerable:
                console.print(f"({plan.unanswerable} candidates left out: the replay table has no value for them)",
                              highlight=False)

        def measure(archs) -> None:
            progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                                console=err if as_json else console, transient=True)
            with progress:
                s = run_campaign(st, served, ctx.space, archs, cache=ModelCache(cache_dir), command=command,
                                 observer=_BatchObserver(progress), **lease_args(wait))
            if s.failed and not as_json:
                print_summary(s)

        def on_round(r) -> None:
            if not as_json:
                print_table(_round_table(r, f"round {r.round} (K: target samples; SRCC, err%: leave-one-out; "
                                              "E[...]: expected against the truth)"))

        try:
            with reachable(plan.profile) as served:  # a virtual phone is served for the whole loop
                result = tl.run_loop(plan, measure, on_round)
        except KeyboardInterrupt:
            done = len(tl.measured_state(plan)[0])
            err.print(f"\n[yellow]interrupted[/]: {done} {target} measurements are in {store}; rerun the same "
                      "command to resume where it stopped.")
            raise typer.Exit(130) from None
    front, last = result.front, result.rounds[-1]
    if out:
        write_table(front, out)
    if as_json:
        print_json({"target": target, "space": space, "accuracy": plan.accuracy_name,
                          "candidates": len(plan.archs), "left_out_unanswerable": plan.unanswerable,
                          "left_out_constant_output": plan.constant_output,
                          "resumed_rounds": result.resumed_from, "already_done": result.already_done,
                          "rounds": [{k: v for k, v in r.to_json().items() if k not in ("front", "front_prob")}
                                     for r in result.rounds],
                          "front": json.loads(front.to_json(orient="records"))})
        return
    if result.already_done and last.stop == "budget":
        console.print(f"the loop for {target} already stopped in round {last.round} with {last.n_samples} samples, "
                      f"its budget spent (raise --budget above {last.n_samples} to go on); its front:")
    elif result.already_done:
        console.print(f"the loop for {target} already settled in round {last.round} with {last.n_samples} samples; "
                      "its front:")
    _print_front(front, plan.accuracy_name, f"predicted Pareto front on {target} ({space}, {plan.accuracy_name})")
    spent = (f"the budget of {budget} samples is spent" if last.n_samples <= budget else
             f"--budget {budget} was spent before the loop began: the target already had more samples")
    why = {"stable": "the front is stable", "budget": spent}.get(last.stop or "", "no candidates left")
    console.print(f"stopped after {last.n_samples} target samples ({why}). Confidence: expected HV ratio "
                  f"{last.expected_hv:.4f}, expected recall {last.expected_recall:.2f}, mean P(on front) "
                  f"{last.confidence:.2f}; LOO SRCC {_fmt(last.loo_srcc, '.3f')}"
                  + (f"; wrote {out}" if out else ""), highlight=False)
    console.print(f"the last round's predictor is saved: harness predict --device {target} --space {space}",
                  highlight=False)


class _BatchObserver:
    """A progress bar over one round's batch; failures are reported, never hidden."""

    def __init__(self, progress):
        self.progress, self.task = progress, None

    def started(self, summary, todo: int) -> None:
        self.task = self.progress.add_task(f"measuring on {summary.device}", total=todo, status="")

    def model_done(self, o, summary) -> None:
        if not o.ok:
            from rich.markup import escape

            err.print(f"[yellow]failed[/] {escape(o.arch.key)}: {o.failure_kind}: {escape(o.message[:200])}",
                      highlight=False)
        self.progress.update(self.task, advance=1, status=f"ok {summary.ok} · failed {summary.failed}")


def _keys_that_fit(frame, keys: list[str], n_other: int) -> tuple[list[str], list[str]]:
    """The key columns that fit the terminal unfolded (the first always): NB201's 90-character arch_str folded
    over eight lines buries the numbers. Returns (shown, left out); --out and --json have every column."""
    def width(k: str) -> int:
        return max(len(k), int(frame[k].astype(str).str.len().max()) if len(frame) else 0) + 3

    room = console.width - 12 * n_other
    shown, used = keys[:1], width(keys[0]) if keys else 0
    for k in keys[1:]:
        if used + width(k) <= room:
            shown.append(k)
            used += width(k)
    return shown, [k for k in keys if k not in shown]


def _say_left_out(left_out: list[str]) -> None:
    if left_out:
        console.print(f"({', '.join(left_out)} left out at this terminal width of {console.width} columns; "
                      "--out FILE or --json has every column)", highlight=False)


def _print_front(front, acc_name: str, title: str, limit: int = 40) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    keys = [c for c in front.columns if c not in (acc_name, "predicted_ms", "measured_ms", "p_front", "latency_ms")]
    keys, left_out = _keys_that_fit(front.head(limit), keys, 4)
    # the title names the accuracy column: its long name as a header broke mid-word at 80 columns
    for col in [*keys, "accuracy", "predicted ms", "measured ms", "P(front)"]:
        t.add_column(col, justify="left" if col in keys else "right", overflow="fold", no_wrap=col in keys)
    for _, row in front.head(limit).iterrows():
        t.add_row(*[str(row[k]) for k in keys], f"{row[acc_name]:.2f}", f"{row.predicted_ms:.3f}",
                  _fmt(row.measured_ms, ".3f"), f"{row.p_front:.2f}")
    print_table(t)
    _say_left_out(left_out)
    if len(front) > limit:
        console.print(f"... {len(front) - limit} more (--out to write them all)")


CLOSE_CALL = 0.75  # search notes picks whose median P(under) is below this


@cli_errors
def search(
    target: TargetOpt,
    max_ms: Annotated[float, typer.Option("--max-ms", help="Latency budget on the target, in ms.")],
    space: SpaceOpt = "nb201",
    accuracy: AccOpt = None,
    top: Annotated[int, typer.Option(help="How many architectures to list.")] = 10,
    verify: Annotated[int, typer.Option(min=0, help="Measure the best N on the device and report which held the "
                                        "budget (0 = don't).")] = 0,
    confidence: Annotated[Optional[float], typer.Option(
        help="List only architectures under the budget with at least this probability (e.g. 0.9): predicted "
             "latencies count with the predictor's own leave-one-out error, so picks just under the budget "
             "drop out. Default: by the point prediction.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        callback=table_path, help="Write the list to this CSV/Parquet.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wait: WaitOpt = False,
    store: StoreOpt = DEFAULT_STORE, devices_dir: DevicesDirOpt = DEFAULT_DEVICES, cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """The most accurate architectures under --max-ms on the target.

    By its measured latency where the store has one, else its saved predictor's (run `harness transfer`
    first). --verify N measures the top N."""
    from harness.analysis import search as search_mod
    from harness.analysis import transfer_loop as tl
    from harness.analysis.workflow import open_context
    from harness.campaign import run_campaign
    from harness.devices.registry import ProfileRegistry
    from harness.models.cache import ModelCache
    from harness.errors import HarnessError
    from harness.results.export import write_table
    from harness.results.store import Store

    command = shlex.join(["harness", *sys.argv[1:]])
    with Store(store) as st:
        ctx = open_context(st, space, str(cache_dir))
        try:  # a profile's series (NAME@bs4 for a profile with that workload) is what it measured and verifies
            profile = tl.resolve_target(ProfileRegistry(devices_dir), ctx, target)
            target = profile.measured_name
        except HarnessError:
            if verify:
                raise
            profile = None  # an imported device: searched by its data alone
        answerable = None
        if profile is not None and profile.connection.kind == "replay":  # what it can answer is known up front
            from harness.devices.replay import ReplayTable

            answerable = set(ReplayTable(profile.connection.table, profile.connection.column).ms)
        with console.status("predicting ..."):
            r = search_mod.search(ctx, target, max_ms, accuracy, top, confidence, answerable)
        table = r.top
        if verify:
            def measure(archs) -> None:
                with reachable(profile) as served:  # a virtual phone is served for the command
                    run_campaign(st, served, ctx.space, archs, cache=ModelCache(cache_dir), command=command,
                                 **lease_args(wait))

            table = search_mod.verify(ctx, r, verify, measure)
    if out:
        write_table(table, out)
    if as_json:
        print_json(
            {"target": target, "max_ms": max_ms, "accuracy": r.accuracy, "candidates": r.n_candidates,
             "under_budget": r.n_under, "predictor": r.predictor, "left_out_constant_output": r.constant_output,
             "left_out_not_positive": r.not_positive, "left_out_unanswerable": r.unanswerable,
             "top": json.loads(table.to_json(orient="records"))})
        return
    from rich.table import Table

    t = Table(title=f"best {space} architectures under {max_ms:g} ms on {target} ({r.accuracy})",
              title_justify="left")
    keys = [c for c in table.columns if c not in (r.accuracy, "latency_ms", "source", "measured_ms", "held", "p_under")]
    extra = ["measured ms", "held"] if "held" in table.columns else []
    prob = ["P(under)"] if "p_under" in table.columns else []
    keys, left_out = _keys_that_fit(table, keys, 3 + len(extra) + len(prob))
    for col in [*keys, "accuracy", "latency ms", "source", *prob, *extra]:  # the title names the accuracy column
        t.add_column(col, justify="left" if col in keys else "right", overflow="fold", no_wrap=col in keys)
    for _, row in table.iterrows():
        cells = [*[str(row[k]) for k in keys], f"{row[r.accuracy]:.2f}", f"{row.latency_ms:.3f}", row.source,
                 *([f"{row.p_under:.2f}"] if prob else [])]
        if extra:
            held = row.held
            cells += [_fmt(row.measured_ms, ".3f"),
                      "-" if held is None or held != held else ("[green]yes[/]" if held else "[red]no[/]")]
        t.add_row(*cells)
    print_table(t)
    _say_left_out(left_out)
    sure = f" with probability >= {r.confidence:g}" if r.confidence is not None else ""
    console.print(f"{r.n_under} of {r.n_candidates} architectures are under {max_ms:g} ms{sure}"
                  + (f" (gaps predicted by {r.predictor})" if r.predictor else " (measured values only)")
                  + (f"; {r.constant_output} whose network's output is a constant were not considered"
                     if r.constant_output else "")
                  + (f"; {r.unanswerable} its replay table has no value for were left out" if r.unanswerable else "")
                  + (f"; {r.not_positive} the predictor put at or below 0 ms were left out (it extrapolates "
                     "there: measure some of them, or adapt with --method multiproxy)" if r.not_positive else "")
                  + (f"; wrote {out}" if out else ""), highlight=False)
    close = table[(table.source == "predicted")].p_under if "p_under" in table.columns else table.source[:0]
    if r.confidence is None and len(close) and float(close.median()) < CLOSE_CALL:
        # picked for their accuracy among predictions under the budget, they are the ones predicted too fast more
        # often than P(under) says (a walk: 2 of 10 held at P(under) 0.52-0.63)
        console.print(f"[yellow]note:[/] the predicted picks sit close to the budget (P(under) {close.min():.2f}–"
                      f"{close.max():.2f}), and picks chosen for their accuracy hold it less often than that says; "
                      "--verify N measures them, --confidence 0.9 keeps surer ones", highlight=False)
    if extra:
        n, new = table.attrs.get("verified", len(table)), table.attrs.get("newly_measured", 0)
        failed = table.attrs.get("failed", 0)
        held = table.held.head(n).dropna()
        before = n - new - failed
        console.print(f"verified the top {n}: {int(held.sum())} of {len(held)} held the budget ("
                      + (f"{new} measured now, {before} measured before" if new or failed else
                         f"all {n} were measured before: nothing new to measure; --verify more than {n} to go further")
                      + (f"; {failed} could not be measured: `harness campaigns` says why" if failed else "")
                      + ")", highlight=False)
