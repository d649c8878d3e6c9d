"""``harness transfer``: the closed loop on the store, measuring through real campaigns.

Everything is checked before the first measurement (target profile, space, accuracy column, sources,
budget), so bad input measures nothing. Each round is saved in the store as a predictor (method
``multiproxy``) whose provenance carries the round's decisions, *before* its next batch is measured: an
interrupted run is resumed by rerunning the same command (campaigns resume by content; the loop's
history is read back from the store). The last round's predictor is the target's predictor, so
``harness predict`` and ``harness search`` use it afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis import closed_loop as cl
from harness.analysis.workflow import (GUESSING_SOURCE_ARCHS, Context, resolve_proxies, same_values,
                                       source_latencies)
from harness.devices.profile import Profile
from harness.devices.registry import ProfileRegistry
from harness.errors import HarnessError, UnknownNameError
from harness.models.spaces import Arch
from harness.results.store import is_workload_label, measured_name, parse_workload_label

METHOD = "multiproxy"  # what each round saves: a multi-proxy predictor (``predict`` reads it back)
DEFAULT_ACCURACY = "acc_cifar100_test_200ep"


def resolve_target(registry: ProfileRegistry, ctx: Context, target: str) -> Profile:
    """The target's profile; a clear error when there is none (with a hint when the store has its data). A
    workload series ``NAME@bs8.fp16`` is the profile ``NAME`` at that workload (as `measure -d NAME --batch-size 8
    --precision fp16` measured it: no profile file can carry that name)."""
    base, _, label = target.partition("@")
    if label and is_workload_label(label):
        try:
            return registry.get(base).with_workload(f"the target {target}", **parse_workload_label(label))
        except UnknownNameError:
            pass  # no such profile: the errors below
    try:
        return registry.get(target)
    except UnknownNameError as e:
        has = ctx.store.latencies(ctx.space.name, [target])
        if len(has) and (has.origin == "imported").all():
            raise _imported(target, len(has), ctx, registry) from None
        if len(has):
            raise HarnessError(f"{target!r} has {len(has)} {ctx.space.name} latencies in the store but no device "
                               f"profile to measure with; add {registry.user_dir / (target + '.yaml')} (kind "
                               f"replay answers from a published table)") from None
        raise HarnessError(f"unknown target {target!r}: no device profile and no {ctx.space.name} data in "
                           f"{ctx.store.path}. Valid profiles: {', '.join(e.valid)}") from None


def _imported(target: str, n: int, ctx: Context, registry: ProfileRegistry) -> HarnessError:
    """An imported device is no device to measure, and its name cannot be a profile's too (one name is one device;
    the advice to add NAME.yaml led, after building the pool, to that refusal): say what works."""
    return HarnessError(
        f"{target!r} is imported data ({n} {ctx.space.name} latencies), and one name is one device: a measured "
        f"device cannot share it. To run the loop on a device that answers from that table, add a profile under "
        f"another name, e.g. {registry.user_dir / (target + '-replay.yaml')} with connection kind replay, the table "
        f"it came from and column {target}_ms; or measure the real device under its own name")


def resolve_accuracy(ctx: Context, accuracy: str | None) -> pd.Series:
    metrics = ctx.store.arch_metrics(ctx.space.name, "accuracy")
    if metrics.empty:
        example = (" (e.g. harness import ../shared/data/nb201_accuracy/nb201_accuracy_15625.csv.gz)"
                   if ctx.space.name == "nb201" else "; no public one ships with harness for this space: use your own "
                   "trained accuracies")
        raise HarnessError(f"the store has no accuracy for {ctx.space.name} architectures; the accuracy-latency "
                           f"front (transfer, search) needs one: import a table with the space's key column(s) "
                           f"({', '.join(ctx.space.key_columns)}) and acc_* columns first{example}")
    name = accuracy or (DEFAULT_ACCURACY if DEFAULT_ACCURACY in metrics.columns else None)
    if name is None:
        raise HarnessError(f"choose --accuracy; {ctx.space.name} has: {', '.join(metrics.columns)}")
    if name not in metrics.columns:
        raise HarnessError(f"--accuracy {name!r} is not a {ctx.space.name} accuracy column in {ctx.store.path}; "
                           f"have: {', '.join(metrics.columns)}")
    return metrics[name].dropna()


def twin_of(profile: Profile) -> str | None:
    """The imported device a replay target answers from (it must not be its own source)."""
    conn = profile.connection
    if conn.kind == "replay" and conn.column.endswith("_ms"):  # type: ignore[union-attr]
        return conn.column[:-3]  # type: ignore[union-attr]
    return None


@dataclass
class LoopPlan:
    ctx: Context
    profile: Profile
    accuracy_name: str
    archs: list[Arch]
    pool: cl.Pool
    cfg: cl.LoopConfig
    loop_id: str
    graph_names: list[str]
    kept_names: list[str]        # graph features with dead convolutions kept (the second view)
    source_predictors: dict[str, dict]
    excluded_sources: list[str] = field(default_factory=list)
    unanswerable: int = 0        # candidates left out because a replay target's table has no value for them
    constant_output: int = 0     # candidates left out because their network's output is a constant
    edge_activity: int = 0       # edge-activity columns at the end of the structure (features.edge_activity)

    @property
    def target(self) -> str:
        """The series the loop measures and saves predictors for: ``name``, or ``name@bs4`` for a profile whose
        workload is not the default (its results are stored under that name; reading ``name`` found none)."""
        return self.profile.measured_name

    def row_of(self) -> dict[str, int]:
        return {a.key: i for i, a in enumerate(self.archs)}


def plan_loop(ctx: Context, registry: ProfileRegistry, target: str, accuracy: str | None = None,
              proxies: Sequence[str] = ("all",), cfg: cl.LoopConfig = cl.LoopConfig()) -> LoopPlan:
    """Check everything and build the candidate pool; measures nothing."""
    profile = resolve_target(registry, ctx, target)
    target = profile.measured_name  # the series measured: rp@bs4 for a profile with a batch-4 workload
    has = ctx.store.latencies(ctx.space.name, [target])
    if len(has) and (has.origin == "imported").all():  # refused by the first campaign, after the pool was built
        raise _imported(target, len(has), ctx, registry)
    answers: set[str] | None = None  # the keys the target can measure, where that is known beforehand
    if profile.connection.kind == "replay":
        from harness.devices.replay import ReplayTable

        table = ReplayTable(profile.connection.table, profile.connection.column)  # type: ignore[union-attr]
        if table.space != ctx.space.name:
            raise HarnessError(f"{target} replays a {table.space} table ({table.path}); it cannot measure "
                               f"{ctx.space.name} architectures")
        answers = set(table.ms)
    acc = resolve_accuracy(ctx, accuracy)
    twin = twin_of(profile)
    twins = ([twin] if twin else []) + (same_values(ctx, table.ms, exclude=[target, twin]) if answers is not None
                                        else [])
    excluded = [target] + twins
    sources = resolve_proxies(ctx, proxies, exclude=excluded)
    named = [s for s in excluded if s in sources]
    if named:
        raise HarnessError(f"the target cannot be its own source: drop {', '.join(named)} from --proxy"
                           + (" (its latencies are the replay table's)" if named[0] != target else ""))
    with_accuracy = [a for a in ctx.candidates() if a.key in acc.index]
    archs, n_constant = ctx.worth_measuring(with_accuracy)
    # a replay table that lacks an architecture fails it on every visit: never pick one (a first batch of
    # extremes would otherwise spend itself on them)
    n_answerable = len(archs)
    if answers is not None:
        archs = [a for a in archs if a.key in answers]
        if not archs:
            raise HarnessError(f"{target}'s replay table {table.path} has no value for any {ctx.space.name} "
                               f"architecture with {acc.name}; check connection.column")
    cfg.validate(len(archs))
    settings = {"target": target, "space": ctx.space.name, "accuracy": acc.name,
                **{k: v for k, v in cfg.__dict__.items() if k != "budget"}}
    if cfg.explore_by == "diverse":  # the default: a loop started before the option existed keeps its id
        del settings["explore_by"]
    if len(archs) < len(with_accuracy):  # rounds store pool rows: a loop planned on another pool is another loop
        settings["pool"] = hashlib.sha256("\n".join(a.key for a in archs).encode()).hexdigest()[:16]
    if list(proxies) == ["all"]:
        sources = without_guessers(ctx, sources)
        # the same command again resumes its loop, though a device measured since (another target's loop) has
        # joined `all`: a new loop id threw the history away and measured a new first batch
        sources = earlier_sources(ctx, target, settings, excluded) or sources
    loop_id = _loop_id(settings, sources)
    source_ms, predictors = source_latencies(ctx, sources, archs)
    st = ctx.structure(archs)
    pool = cl.Pool([a.key for a in archs], source_ms, list(sources), st.onehot, st.matrix,
                   acc.reindex([a.key for a in archs]).to_numpy(dtype=float), st.plain_width, st.graph_cols)
    return LoopPlan(ctx, profile, str(acc.name), archs, pool, cfg, loop_id, st.names, st.kept, predictors,
                    [s for s in excluded[1:] if s in ctx.devices_with_data()], n_answerable - len(archs),
                    n_constant, st.n_edges)


def _loop_id(settings: dict, sources: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps({**settings, "sources": sorted(sources)}, sort_keys=True).encode()).hexdigest()[:12]


def without_guessers(ctx: Context, sources: Sequence[str]) -> list[str]:
    """``all`` leaves out sources under GUESSING_SOURCE_ARCHS architectures (unless nothing else is left): across
    the pool their values are their own predictor's guesses. An earlier loop's target measured 20-30 times stood
    in six copies as a source of the next loop."""
    counts = ctx.store.latencies(ctx.space.name, list(sources)).groupby("device").key.nunique()
    thin = [s for s in sources if int(counts.get(s, 0)) < GUESSING_SOURCE_ARCHS]
    kept = [s for s in sources if s not in thin]
    if thin and kept:
        ctx.notes.append(f"left out of the proxies (under {GUESSING_SOURCE_ARCHS} {ctx.space.name} architectures "
                         "each: elsewhere their values would be their own predictor's guesses; name them with --proxy "
                         "to use them): " + ", ".join(f"{s} ({int(counts.get(s, 0))})" for s in thin))
        return kept
    return list(sources)


def earlier_sources(ctx: Context, target: str, settings: dict, excluded: Sequence[str]) -> list[str] | None:
    """The sources of this target's latest loop with these very settings, when every one of them is still there
    and is no twin of the target: rerunning a command resumes its loop."""
    have = set(ctx.devices_with_data()) - set(excluded)
    rows = ctx.store.db.execute("SELECT provenance_json FROM predictors WHERE space = ? AND device = ? "
                                "ORDER BY id DESC LIMIT 200", (ctx.space.name, target)).fetchall()
    for (prov,) in rows:
        p = json.loads(prov)
        earlier = p.get("proxies")
        if (p.get("loop_id") and isinstance(earlier, list) and earlier and set(earlier) <= have
                and _loop_id(settings, earlier) == p["loop_id"]):
            return list(earlier)
    return None


# --- state in the store ----------------------------------------------------------------------------
def measured_state(plan: LoopPlan) -> tuple[dict[int, float], set[int]]:
    """Pool row -> ms of the target's successful measurements; rows whose only measurements failed."""
    rows = plan.row_of()
    ok = plan.ctx.store.latencies(plan.ctx.space.name, [plan.target])
    measured = {rows[k]: float(v) for k, v in zip(ok.key, ok.latency_ms) if k in rows}
    m = plan.ctx.store.measurements(plan.profile.name, plan.ctx.space.name)
    m = m[np.array([measured_name(*r) == plan.target for r in zip(m.device, m.batch_size, m.input_shape, m.precision)],
                   dtype=bool)]  # its series alone (an empty list would have selected columns)
    failed = {rows[k] for k in set(m.key[m.status == "failed"]) if k in rows and rows[k] not in measured}
    return measured, failed


def history(plan: LoopPlan) -> list[cl.Round]:
    rows = plan.ctx.store.db.execute(
        "SELECT provenance_json, metrics_json FROM predictors WHERE space = ? AND device = ? ORDER BY id",
        (plan.ctx.space.name, plan.target)).fetchall()
    out = []
    for prov, metrics in rows:
        if json.loads(prov).get("loop_id") == plan.loop_id:
            d = json.loads(metrics)["round"]
            out.append(cl.Round(**d))
    return out


def _save(plan: LoopPlan, r: cl.Round, model) -> int:
    payload = {**model.to_json(), "graph_features": plan.graph_names, "graph_features_kept": plan.kept_names,
               "edge_activity": plan.edge_activity,
               "source_predictors": {s: plan.source_predictors[s] for s in model.sources
                                     if s in plan.source_predictors}}
    keys = plan.pool.keys
    prov = {"loop_id": plan.loop_id, "target": plan.target, "accuracy": plan.accuracy_name,
            "proxies": plan.pool.source_names, "round": r.round, "n_target_samples": r.n_samples,
            "next_batch": [keys[i] for i in r.next_batch], "stop": r.stop, "method": METHOD,
            "by": "harness transfer (closed loop)"}
    return plan.ctx.store.save_predictor(plan.ctx.space.name, plan.target, METHOD, payload, prov,
                                         {"round": r.to_json()})


# --- the loop ------------------------------------------------------------------------------------------
@dataclass
class LoopResult:
    rounds: list[cl.Round]
    resumed_from: int               # rounds found in the store at the start
    front: pd.DataFrame             # the predicted front, fastest first
    already_done: bool = False


def run_loop(plan: LoopPlan, measure: Callable[[list[Arch]], None],
             on_round: Callable[[cl.Round], None] = lambda r: None) -> LoopResult:
    """``measure(archs)`` runs a campaign on the target (resumable); everything else is decided here."""
    cfg = plan.cfg
    hist = history(plan)
    resumed = len(hist)
    measured, failed = measured_state(plan)
    if hist and (hist[-1].stop == "stable" or hist[-1].stop == "budget" and len(measured) >= cfg.budget):
        # rerun of a loop that ended (stable, or its budget spent and not raised): its front again, nothing measured
        r, model = cl.step(plan.pool, measured, hist[:-1], cfg, failed)
        return LoopResult(hist, resumed, front_table(plan, hist[-1], model, measured), already_done=True)
    batch = hist[-1].next_batch if hist else cl.first_batch(plan.pool, cfg.first_batch, cfg.seed).tolist()
    while True:
        todo = [i for i in batch if i not in measured and i not in failed]
        todo = todo[:max(0, cfg.budget - len(measured))]  # the budget counts what the target had before the loop
        if todo:
            measure([plan.archs[i] for i in todo])
            measured, failed = measured_state(plan)
        if len(measured) < 3:
            raise HarnessError(f"only {len(measured)} of the first batch measured successfully on {plan.target} "
                               f"({len(failed)} failed); see `harness campaigns` and the store's failures")
        r, model = cl.step(plan.pool, measured, hist, cfg, failed)
        _save(plan, r, model)
        hist.append(r)
        on_round(r)
        if r.stop or not r.next_batch:
            return LoopResult(hist, resumed, front_table(plan, r, model, measured))
        batch = r.next_batch


def front_table(plan: LoopPlan, r: cl.Round, model, measured: dict[int, float]) -> pd.DataFrame:
    pred = np.exp(cl.predict_log(model, plan.pool, np.asarray(r.front, dtype=int)))
    rows = []
    for i, p, prob in zip(r.front, pred, r.front_prob):
        rows.append({**plan.archs[i].columns, plan.accuracy_name: float(plan.pool.accuracy[i]),
                     "predicted_ms": float(p), "measured_ms": measured.get(i, float("nan")), "p_front": prob})
    df = pd.DataFrame(rows)
    df["latency_ms"] = df.measured_ms.fillna(df.predicted_ms)
    return df.sort_values("latency_ms").reset_index(drop=True)
