"""`harness measure`: a resumable campaign with a live progress bar."""

from __future__ import annotations

import shlex
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from harness.cli.common import (DEFAULT_CACHE, DEFAULT_DEVICES, DEFAULT_STORE, CacheOpt, DevicesDirOpt, StoreOpt,
                                cli_errors, console, err, esc, names_list, print_table, reachable, say_interrupted,
                                working)
from harness.errors import HarnessError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from harness.campaign import CampaignSummary, ModelOutcome

def campaign_progress(con: Console) -> Progress:
    """Bar, count, elapsed and ETA always fit; the device name and the live status line give way first.

    At 80 columns rich would otherwise squeeze the count, elapsed time and ETA out to make room for the
    status text, which is exactly what a user watching a long campaign needs to see.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.table import Column

    narrow = con.width < 120
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}", table_column=Column(max_width=16 if narrow else 30,
                                                                     overflow="ellipsis", no_wrap=True)),
        BarColumn(bar_width=12 if narrow else 30),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        TextColumn("eta", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[status]}", table_column=Column(ratio=1, overflow="ellipsis", no_wrap=True)),
        console=con, transient=False, expand=True)


class ProgressObserver:
    """Progress bar with ETA plus a live line: done/failed counts, last and running median latency."""

    def __init__(self, progress: Progress, device: str = ""):
        self.progress = progress
        # a spinner from the start: connecting and starting the runner can take seconds before `started`
        self.task = progress.add_task(f"{device}: connecting", total=None, status="")
        self.medians: list[float] = []
        self.began = False

    def drop_if_idle(self) -> None:
        """Remove the spinner when the campaign stopped before it began (an error while connecting)."""
        if not self.began:
            self.progress.remove_task(self.task)

    def started(self, summary: CampaignSummary, todo: int) -> None:
        self.began = True
        c = summary.conditions
        what = " ".join(str(v) for v in (c.get("runtime"), c.get("runtime_version")) if v)
        if c.get("threads") is not None:
            what += f", {c['threads']} thread(s)"
        where = c.get("cpu_model") or c.get("gpu_name") or c.get("machine")
        console.print(f"[bold]{esc(summary.device)}[/]: {esc(what)}{' on ' + esc(where) if where else ''}; "
                      + (f"{todo} visit(s) to make ({summary.rounds} rounds per architecture), {summary.skipped} "
                         "architecture(s) already in the store" if summary.rounds > 1
                         else f"{todo} to measure, {summary.skipped} already in the store"), highlight=False)
        if summary.fixed_runs:
            console.print(f"  (this device's tool times a fixed count: {summary.fixed_runs} runs per visit, the "
                          "policy's timed_runs; the profile's adaptive settings apply to harness's own runner "
                          "only)", highlight=False)
        if summary.unused_timed_runs:
            console.print(f"  (policy.timed_runs {summary.unused_timed_runs} is not used here: the profile's adaptive "
                          "settings decide each visit's runs (min_runs/max_runs); set adaptive: null for a fixed "
                          "count)", highlight=False)
        if summary.unused:
            console.print(f"  (not used by this device's tool: {esc('; '.join(summary.unused))})", highlight=False)
        self.progress.update(self.task, description=summary.device, total=todo, completed=0)

    def model_starting(self, arch) -> None:
        """Before each model: exporting (int8: calibrating), pushing and timing it can take seconds."""
        if not self.medians:  # until the first latency, say what is going on; then the latency line stays
            self.progress.update(self.task, status=f"exporting and timing {arch.label[:24]}")

    def waiting(self, reasons: list[str]) -> None:
        """The gate holds the next model: say why on the progress line instead of a bar that does not move."""
        self.progress.update(self.task, status=f"waiting: {'; '.join(reasons)}")

    def model_done(self, o: ModelOutcome, summary: CampaignSummary) -> None:
        narrow = self.progress.console.width < 120  # ~20 columns left for the status: the latency first
        if o.ok and o.median_ms is not None:
            self.medians.append(o.median_ms)
            ordered = sorted(self.medians)
            status = (f"{o.median_ms:.3f} ms · {summary.failed} failed" if narrow else
                      f"ok {summary.ok} · failed {summary.failed} · last {o.median_ms:.3f} ms · "
                      f"median {ordered[len(ordered) // 2]:.3f} ms")
        else:
            status = (f"{o.failure_kind} · {summary.failed} failed" if narrow else
                      f"ok {summary.ok} · failed {summary.failed} · last: {o.failure_kind}")
            self.progress.console.print(f"[yellow]failed[/] {escape(o.arch.key)}: {o.failure_kind}: "
                                        f"{escape(o.message[:300])}")
        self.progress.update(self.task, advance=1, status=status)


def print_model_results(st_path: Path, device: str, keys: list[str]) -> None:
    """What benchmark_model users look for: each file's latency as the store keeps it and `export` writes it (the
    median over its visits, one per round; the table showed the last visit's, 1.127 ms for an exported 1.151),
    with the spread of the visits."""
    import pandas as pd
    from rich.table import Table

    from harness.results.store import Store

    with Store(st_path) as st:
        visits = st.visits("file", device)
        lat = st.latencies("file", [device]).set_index("key").latency_ms
        m = st.measurements(device, "file").set_index("id")
    visits = visits[visits.key.isin(keys)]
    if visits.empty:
        return
    rows = m.loc[visits.id].assign(key=visits.key.to_numpy(), cv=lambda d: d.std_ms / d.mean_ms)
    per = rows.groupby("key", sort=False).agg(visits=("median_ms", "size"), low=("median_ms", "min"),
                                              high=("median_ms", "max"), p90=("p90_ms", "median"),
                                              min_ms=("min_ms", "min"), cv=("cv", "median"),
                                              runs=("n_runs", "median"), load=("init_ms", "median"))
    several = bool((per.visits > 1).any())
    n = sorted(set(per.visits))
    table = Table(title=f"model files on {escape(device)}" + (
        f" (median over {'/'.join(map(str, n))} visits, as exported; range: the visits' medians)" if several else ""))
    # with several visits the range replaces the min column (80 columns hold 7)
    cols = ("file", "median ms") + (("range ms",) if several else ("min ms",)) + ("p90 ms", "CV", "runs/visit",
                                                                                    "load ms")
    for col in cols:
        table.add_column(col, justify="left" if col == "file" else "right", overflow="fold")

    def ms(v, spec: str = ".3f") -> str:  # a statistics-only tool (benchmark_model) reports no p90: NULL
        return "-" if v is None or pd.isna(v) else format(v, spec)

    for key, r in per.iterrows():
        cells = [escape(str(key)), ms(lat.get(key)),
                 (f"{ms(r.low)}–{ms(r.high)}" if r.visits > 1 else ms(r.low)) if several else ms(r.min_ms),
                 ms(r.p90), "-" if pd.isna(r.cv) else f"{100 * r.cv:.1f} %", ms(r.runs, ".0f"), ms(r.load, ".1f")]
        table.add_row(*cells)
    print_table(table)


def print_summary(s: CampaignSummary) -> None:
    # with rounds, ok and failed count visits: say so, or 60 "measured" for 20 architectures reads as a bug
    visits = (f" ({s.rounds} interleaved visits to each of {s.requested - s.skipped} "
              f"{'model file(s)' if s.space == 'file' else 'architecture(s)'})"
              if s.rounds > 1 and s.ok + s.failed else "")
    graph = "" if s.space == "file" else f" (graph: {s.graph_mode})"  # model files are measured as given
    console.print(f"[bold]{esc(s.device)}[/] {esc(s.space)}{graph}: {s.ok} measured, {s.failed} failed"
                  f"{visits}, {s.skipped} already in the store, {s.exported} model file(s) exported, {s.elapsed_s:.1f} s "
                  f"({s.status})",
                  highlight=False)
    if s.other_plan:
        console.print(f"  {s.other_plan} of these architectures had visits under another rounds plan (a farm "
                      f"measures one visit each): a campaign's rounds are part of what it measures, so this one "
                      f"visited them again in its {s.rounds} round(s); --rounds 1 would have reused one-visit "
                      "measurements", highlight=False)
    if s.degenerate:
        console.print(f"  {s.degenerate} degenerate model(s) (output independent of the input, e.g. an all-'none' "
                      "cell): measured as deployed and marked 'degenerate' in the store")
    if s.failures:
        console.print("  failures by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(s.failures.items())))
    if s.unstable:
        print_unstable(s)
    print_visit_notes(s)
    if s.runs:
        console.print(f"  {s.runs} timed runs; {s.suspect} suspect visit(s) (noisy neighbours, not quiet, or a "
                      f"sentinel out of band: see `suspect` in the store)"
                      + (f"; gating waited {s.gate_wait_s:.1f} s" if s.gate_wait_s else "")
                      + (f", {s.gate_timeouts} time(s) without the device getting quiet" if s.gate_timeouts else "")
                      + (f"; paused {s.paused_s:.1f} s for sentinels" if s.paused_s else ""), highlight=False)


def print_visit_notes(s: CampaignSummary, who: str = "") -> None:
    """What a campaign's visits say about its numbers, for one device's summary and each of a farm's."""
    if s.caveat:
        console.print(f"  [yellow]precision{who}:[/] {escape(s.caveat)}", highlight=False)
    if s.repaired:
        console.print(f"  [yellow]cache{who}:[/] {s.repaired} cached model file(s) no longer matched the SHA-256 "
                      "recorded when they were exported (changed on disk: a copy over them, truncation, a failing "
                      "disk) and were exported again before being measured; if this repeats, check the disk under "
                      "--cache-dir", highlight=False)
    if s.no_ci:
        console.print(f"  [yellow]no noise estimate{who}:[/] {s.no_ci} of {s.ok} visit(s) had fewer than 6 clean timed "
                      "runs, too few for a 95 % CI of the median: how much their numbers move is unknown. With a "
                      "fixed policy raise policy.timed_runs; with the adaptive one, adaptive.max_seconds (it stopped "
                      "a slow model's runs first); if most runs were preempted, measure on a quieter device",
                      highlight=False)


    from harness.campaign import RANK_AGREEMENT_MIN_ARCHS, RANK_AGREEMENT_WARN, round_agreement, visit_disagreement

    agreement = round_agreement(s)
    twice = sum(len(v) >= 2 for v in s.visit_medians.values())
    graphs = s.cuda_graph_setting
    if agreement is not None and agreement[0] >= RANK_AGREEMENT_WARN:
        console.print(f"  rounds agree{who}: two visits of each of {agreement[1]} architectures (this campaign's "
                      f"first two) rank them alike at SRCC {agreement[0]:.3f} (the ranking's noise floor on this "
                      "device)", highlight=False)
    elif agreement is not None:
        console.print(f"  [yellow]rankings unreliable{who}:[/] two visits of each of {agreement[1]} architectures "
                      f"(this campaign's first two) rank them alike at only SRCC {agreement[0]:.3f}: they differ by "
                      "less than this device moves between visits, so their order here is largely noise. Lower the "
                      "noise (a quieter device" + (f"; CUDA graphs, {graphs}" if graphs else "") + "), measure more "
                      "visits (policy.rounds: the stored latency is their median), or rank on a device that tells "
                      "them apart", highlight=False)
    elif twice >= 2:
        console.print(f"  rounds{who}: {twice} architectures were visited more than once here, too few to say whether their "
                      f"ranking is above the noise (that takes {RANK_AGREEMENT_MIN_ARCHS} or more)", highlight=False)
    d = visit_disagreement(s)
    if d is not None:
        gpu = (" (a GPU at small batch waits on the host launching its kernels: CUDA graphs, " + graphs +
               ", took an H200 from ±2.9 % to ±0.3 %)") if graphs else ""
        console.print(f"  [yellow]visits disagree{who}:[/] the first and second visits of an architecture differ "
                      f"by a median {d.median_diff:.0%} (worst {d.worst_diff:.0%}, {d.archs} architectures) while "
                      f"their own runs put that difference within ±{d.within:.1%}: the device's speed moves between visits, "
                      f"which more runs per visit cannot show{gpu}. A paired reference (policy.reference: auto) "
                      "cancels drift the pair shares. The stored latency is the median over visits, so more visits "
                      "(policy.rounds) steady it; `compare` and `export --ci` resample visits and see this spread only "
                      "where an architecture has two or more",
                      highlight=False)
    if s.energy_mj:
        console.print(f"  energy{who}: {len(s.energy_mj)} visit(s) metered ({s.energy_method}), median "
                      f"{statistics.median(s.energy_mj):.3g} mJ per inference; exported as "
                      f"{getattr(s, 'series', '') or s.device}_mj",
                      highlight=False)
    if s.no_energy:
        why = s.no_energy_why or ""
        fix = ("this device's energy reading does not move here: use another policy.energy method, or off"
               if "moved 0 " in why else "a reset during the pass: later visits are read anew" if "backwards" in why
               else "a counter that moves rarely needs a longer pass: raise policy.energy_seconds")
        stopped = (f"; after {s.no_energy} such passes and none with a figure the campaign ran no more (each costs "
                   "up to 2 x policy.energy_seconds + 1 s)" if s.energy_given_up else "")
        console.print(f"  [yellow]no energy{who}:[/] {s.no_energy} of {s.ok} visit(s) got no energy figure ({why}); "
                      f"their latencies stand{stopped}; {fix}", highlight=False)


def rerun_when(stop: Exception, profile) -> str:
    """When a rerun can go on, by why the campaign stopped: the device left, or its models kept failing (a full
    disk, a missing delegate: the device is there, and a rerun fails the same way until the cause is fixed)."""
    from harness.campaign import CampaignAborted
    from harness.errors import AccessRefused, ConnectionLost

    if isinstance(stop, ConnectionLost):
        if "nothing answers" in str(stop):  # never reached: a device that is down, or a typo in the address
            return "when the device is back, or once connection.host and connection.port point at it"
        return "when the device is back"
    if isinstance(stop, AccessRefused):
        return ("once the device accepts this connection (a changed host key: `harness devices trust "
                f"{profile.name}`; a rejected key: connection.key_file and the device's authorized_keys)")
    if isinstance(stop, CampaignAborted) and "No space left on device" in str(stop):
        workdir = getattr(profile.connection, "workdir", None)
        # the models harness pushed, by their content names, not the folder (a workdir may be a shared one); the
        # device's shell reads the quoted command, so the quoting is for it
        room = (f" (the models harness pushed can go: `adb shell {shlex.quote(f'rm -f {shlex.quote(workdir)}/*.tflite')}`)"
                if workdir and profile.connection.kind == "adb" else "")
        return f"once the device has free space again{room}"
    return "once the cause above is fixed"


def print_profile_changes(device: str, kept: int, changes: list[str]) -> None:
    """Architectures kept as measured were measured with another runtime or machine: one device name, two setups."""
    console.print(f"  [yellow]changed:[/] {kept} architecture(s) kept as measured on {esc(device)} were "
                  f"measured with another profile ({esc('; '.join(changes))}); add --remeasure to measure "
                  "them again with this one, or give the new setup its own profile name", highlight=False)


def print_unstable(s: CampaignSummary, show: int = 3) -> None:
    """Name the least repeatable models with their CV and say what to do, instead of a blanket warning."""
    from harness.campaign import UNSTABLE_CV

    worst = sorted(s.unstable_cv.items(), key=lambda kv: -kv[1])[:show]
    share = len(s.unstable) / max(s.ok, 1)
    names = ", ".join(f"{escape(s.labels.get(k, k))} (CV {100 * cv:.0f} %)" for k, cv in worst)
    what = "visit(s)" if s.rounds > 1 else "model(s)"
    console.print(f"  [yellow]unsteady:[/] {len(s.unstable)} of {s.ok} {what} ended with a 95 % CI of the median "
                  f"wider than +-5 % (or, without a CI, varied by >= {100 * UNSTABLE_CV:.0f} % run to run); "
                  f"worst: {names}", highlight=False)
    many = share >= 0.5 and len(s.unstable) >= 3  # "most models" of 1 of 2 says nothing about the machine
    if many and s.suspect == 0 and s.watched >= s.ok:
        # every visit was watched and none saw other processes or steal: not the machine's load
        hint = ("most models are affected, yet no visit saw other processes or hypervisor steal, so the models' own "
                "run-to-run jitter is the likely cause (sub-millisecond models and int8 kernels jitter by 5-20 %): "
                "let more runs narrow each median (the profile's adaptive max_runs / max_seconds, or rounds)")
    elif many:
        hint = ("most models are affected, so the machine is the likely cause: close other work (load, "
                "thermal throttling) or raise the profile's warmup_runs (and, with the adaptive policy, "
                "adaptive.max_runs / max_seconds; with a fixed one, timed_runs / min_seconds)")
    else:
        hint = ("rankings of these few may be off: measure them again with --remeasure "
                + ("--model FILE" if s.space == "file" else "--arch KEY"))  # --model rejects --arch
    console.print(f"  {hint}.", highlight=False)


# how a command picks architectures (measure, models): the same flags, read by harness.models.selection
ArchOpt = Annotated[Optional[list[str]], typer.Option(
    help="Architecture index or key; repeat or comma-separate (e.g. --arch 0,1,9930).")]
ArchFileOpt = Annotated[Optional[Path], typer.Option(
    help="CSV with the space's key columns (e.g. picks.csv) or a text file, one key per line.")]


def measure(
    device: Annotated[list[str], typer.Option(
        "--device", "-d", callback=names_list, help="Profile name (see `harness devices list`); repeat or "
        "comma-separate for several devices measured at once.")],
    space: Annotated[str, typer.Option(help="Search space.")] = "nb201",
    sample: Annotated[Optional[int], typer.Option(help="Measure N architectures sampled without repeats.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of --sample (same seed, same architectures).")] = 0,
    all_archs: Annotated[bool, typer.Option("--all", help="Measure every architecture of the space.")] = False,
    arch: ArchOpt = None,
    arch_file: ArchFileOpt = None,
    remeasure: Annotated[bool, typer.Option(
        "--remeasure", help="Measure again even what the store already has (adds new rows; export uses the latest).")] = False,
    remeasure_stale: Annotated[bool, typer.Option(
        "--remeasure-stale", help="Measure again the architectures whose stored measurement is of a model from an older exporter "
             "(reported as stale; otherwise kept and skipped).")] = False,
    graph: Annotated[Optional[str], typer.Option(
        help="Model semantics, overriding the profile's 'graph': prune (what a deployment converter exports: "
             "dead code removed, zeros folded, identical ops merged, activations fused) or keep (PyTorch-eager "
             "export: x*0 and dead convs computed, as the PyTorch-exported tables measured).")] = None,
    rounds: Annotated[Optional[int], typer.Option(
        min=1, help="Visit every architecture R times, each round in its own seeded shuffled order (overrides "
                    "the profile's policy.rounds); the latency is the median over rounds.")] = None,
    model: Annotated[Optional[list[Path]], typer.Option(
        "--model", "-m", help="Measure these model files (.onnx or .tflite; repeat) instead of a space's "
        "architectures: stored under space 'file', keyed by name and content hash, resumed like any campaign.")] = None,
    max_failures: Annotated[int, typer.Option(min=1, help="Stop after this many failures in a row.")] = 5,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Batch size instead of the profile's workload.batch_size (default 1); latencies are per "
                    "batch (one inference of N inputs).")] = None,
    input_shape: Annotated[Optional[str], typer.Option(
        help="Input HEIGHTxWIDTH instead of the space's resolution, e.g. 64x64 (spaces without "
             "resolution in their keys).")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, fp16 or int8 (int8 calibrates on the profile's workload.calibration).")] = None,
    each: Annotated[bool, typer.Option(
        "--each/--split", help="Several devices: each measures the whole list (--each), or devices of one "
        "profile `group:` share it, each architecture measured once per group (--split).")] = True,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray", help="Measure on a Ray cluster: 'auto' (this host's) or HOST:PORT of its head. Each device's "
                      "work runs on the host that joined with it (`harness farm join`).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="If another campaign is measuring this device, wait for it instead of exiting.")] = False,
    store: StoreOpt = DEFAULT_STORE,
    devices_dir: DevicesDirOpt = DEFAULT_DEVICES,
    cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Measure architectures on a device. Rerun the same command to resume: only what is missing is measured.

    Every timed run, the conditions (runtime version, threads, CPU, frequency, temperature) and failures
    with their kind go to the store; each model is committed as soon as it is done. A device is measured
    by one campaign at a time: a second command says who holds it and exits (code 3), or waits with --wait.
    With several --device options the devices measure at the same time (one progress line each); with --ray,
    on the hosts they are attached to. Exit status 1 when a device stopped before its list was done, or when
    every model it tried failed; 2 when nothing could start (a bad profile or flag, or a setup the device cannot
    run: a missing provider or energy counter; the message names the field).
    """
    if len(device) > 1 or ray_address is not None or not each:
        from harness.cli.farm import run_farm_command

        run_farm_command(device, space, mode="each" if each else "split", ray_address=ray_address,
                         sample=sample, seed=seed, all_archs=all_archs, arch=arch, arch_file=arch_file,
                         remeasure=remeasure, max_failures=max_failures, store=store, devices_dir=devices_dir,
                         cache_dir=cache_dir, remeasure_stale=remeasure_stale, graph=graph, wait=wait, model=model,
                         batch_size=batch_size, input_shape=input_shape, precision=precision, rounds=rounds)
        return
    summary = run(device[0], space, sample=sample, seed=seed, all_archs=all_archs, arch=arch, arch_file=arch_file,
                  remeasure=remeasure, max_failures=max_failures, store=store, devices_dir=devices_dir,
                  cache_dir=cache_dir, remeasure_stale=remeasure_stale, graph=graph, wait=wait, model=model,
                  batch_size=batch_size, input_shape=input_shape, precision=precision, rounds=rounds)
    if summary.failed and not summary.ok:  # a script must not read "finished, 0 measured" as success
        err.print(f"[bold red]nothing was measured[/]: every one of {summary.failed} visit(s) failed "
                  "(kinds above; the failures are in the store)", highlight=False)
        raise typer.Exit(1)


def own_resolution_is_default(profile, space):
    """An input shape that is the space's own resolution (NB201's 32x32) is the default workload: it was measured
    again as a second series, NAME@32x32, of the very same models."""
    shape = profile.workload.input_shape
    own = getattr(space, "default_input_shape", None)
    if shape is None or own is None or list(shape) != list(own[:2]) or getattr(space, "resolution_in_key", False):
        return profile
    console.print(f"[dim]{shape[0]}x{shape[1]} is {space.name}'s own resolution: measured as the default workload "
                  f"({profile.name}, not {profile.measured_name})[/]", highlight=False)
    return profile.model_copy(update={"workload": profile.workload.model_copy(update={"input_shape": None})})


def parse_shape(text: str | None) -> list[int] | None:
    """``64x64`` (or ``64,64``) -> [64, 64]; a clear error naming the flag otherwise."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise HarnessError(f"--input-shape: expected HEIGHTxWIDTH such as 64x64, got {text!r}")
    return [int(p) for p in parts]


def choose_targets(profiles: list, space: str, model: list[Path] | None, *, sample: int | None, seed: int,
                   all_archs: bool, arch: list[str] | None, arch_file: Path | None) -> tuple:
    """(space, architectures) a measure command asks for: model files (the `file` pseudo-space, checked against
    every profile's runtime) or a selection from a search space."""
    if model:
        from harness.models.files import FileSpace, open_model

        if sample is not None or all_archs or arch or arch_file:
            raise HarnessError("--model measures files; leave out --sample, --all, --arch and --arch-file")
        sp = FileSpace([open_model(m) for m in model])
        for p in profiles:
            sp.check_runtime(p)
        return sp, sp.archs()
    from harness.models.selection import select
    from harness.models.spaces import get_space

    sp = get_space(space)
    return sp, select(sp, sample=sample, seed=seed, all_archs=all_archs, archs=arch, arch_file=arch_file)


@cli_errors
def run(device: str, space: str, *, sample: int | None, seed: int, all_archs: bool, arch: list[str] | None,
        arch_file: Path | None, remeasure: bool, max_failures: int, store: Path, devices_dir: Path,
        cache_dir: Path, remeasure_stale: bool = False, graph: str | None = None,
        wait: bool = False, model: list[Path] | None = None, batch_size: int | None = None,
        input_shape: str | None = None, precision: str | None = None, rounds: int | None = None) -> CampaignSummary:
    with working(f"{device}: loading"):  # the imports below take seconds on a busy machine
        from harness import interrupts
        from harness.campaign import CampaignAborted, DeviceNotQuiet, run_campaign, workload_columns
        from harness.errors import AccessRefused, ConnectionLost
        from harness.devices.lease import DeviceBusy
        from harness.devices.registry import ProfileRegistry
        from harness.models.cache import ModelCache
        from harness.models.passes import check_mode
        from harness.results.store import Store

    profile = ProfileRegistry(devices_dir).get(device).with_workload(
        "the command line", batch_size=batch_size,
        input_shape=parse_shape(input_shape), precision=precision)
    if graph is not None:  # a campaign setting: recorded with the campaign's profile and each measurement
        profile = profile.model_copy(update={"graph": check_mode(graph)})
    sp, archs = choose_targets([profile], space, model, sample=sample, seed=seed, all_archs=all_archs, arch=arch,
                               arch_file=arch_file)
    profile = own_resolution_is_default(profile, sp)
    command = shlex.join(["harness", *sys.argv[1:]])
    with reachable(profile) as profile, Store(store) as st:
        progress = campaign_progress(err)  # stderr: a redirected stdout got the last frame of the bar
        observer = ProgressObserver(progress, profile.name)
        try:
            with progress:
                try:
                    summary = run_campaign(st, profile, sp, archs, cache=ModelCache(cache_dir), command=command,
                                           remeasure=remeasure, remeasure_stale=remeasure_stale,
                                           observer=observer, rounds=rounds,
                                           max_consecutive_failures=max_failures, lease_wait=None if wait else 0.0,
                                           on_lease_wait=lambda h: err.print(
                                               f"waiting: {escape(h.device)} is being measured by "
                                               f"{escape(h.describe())}", highlight=False))
                except BaseException:
                    observer.drop_if_idle()  # no "⠋ dev: connecting 0/?" line left above the error
                    raise
        except DeviceBusy as e:
            err.print(f"[bold red]busy:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(3) from None
        except (ConnectionLost, CampaignAborted, DeviceNotQuiet, AccessRefused) as e:
            # the device stopped before its list was done: exit 1 as the farm does (2 is for a bad command)
            done = len(st.measured_keys(profile.name, sp.name, workload_columns(profile)) & {a.key for a in archs})
            err.print(f"[bold red]stopped:[/] {esc(e)}", highlight=False)
            what = "model file(s)" if model else "architectures"
            rest = "measure them again (--remeasure)" if remeasure and done == len(archs) else "measure the rest"
            err.print(f"{done} of {len(archs)} {what} have a measurement in {esc(store)}; rerun the same command "
                      f"{rerun_when(e, profile)} to {rest}.", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            try:
                with interrupts.shielded():  # a second Ctrl-C does not turn this into a traceback
                    done = len(st.measured_keys(profile.name, sp.name, workload_columns(profile)) & {a.key for a in archs})
                    n_rounds = rounds or profile.policy.rounds
                    what = f"{done} of {len(archs)} architectures are"
                    if n_rounds > 1:  # an architecture with one visit of three is not done: count visits
                        keys = {a.key for a in archs}
                        visits = sum(k in keys for k, _ in st.measured_rounds(
                            profile.name, sp.name, n_rounds, profile.graph, workload_columns(profile)))
                        what = f"{visits} of {len(archs) * n_rounds} visits ({n_rounds} rounds) are"
                    if remeasure:  # the counts above include the earlier measurements: "60 of 60 are in" misled
                        say_interrupted(f"\n[yellow]interrupted[/]: the visits this --remeasure campaign finished are "
                                        f"in {esc(store)} beside the earlier ones; the same command again measures "
                                        "every one again (without --remeasure: nothing more, the latest visits "
                                        "count).")
                    else:
                        say_interrupted(f"\n[yellow]interrupted[/]: {what} in {esc(store)}; rerun the same command "
                                        "to measure the rest.")
            except KeyboardInterrupt:
                pass
            raise typer.Exit(130) from None
    if summary.status == "nothing to do" and model:
        console.print(f"{esc(device)}: all {len(archs)} model file(s) are already in {esc(store)}; nothing to do "
                      "(--remeasure to measure again).", highlight=False)
    elif summary.status == "nothing to do":
        console.print(f"{esc(profile.measured_name)}: all {len(archs)} architectures are already in {esc(store)} (graph: {profile.graph}); "
                      "nothing to do (--remeasure to measure again).", highlight=False)
    else:
        print_summary(summary)
    if model:
        print_model_results(st_path=store, device=profile.name, keys=[a.key for a in archs])
    if summary.profile_changes:
        print_profile_changes(summary.device, summary.changed_archs, summary.profile_changes)
    if summary.stale:
        from harness.models.cache import EXPORTER_VERSION

        console.print(f"  [yellow]stale:[/] {summary.stale} of these architectures were measured with a model from an "
                      f"older exporter (current: v{EXPORTER_VERSION}); they were kept, not re-measured. Add "
                      "--remeasure-stale to measure them again.", highlight=False)
    return summary
