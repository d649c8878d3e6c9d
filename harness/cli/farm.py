"""`harness measure` on several devices or a Ray cluster, and `harness farm join | status`."""

from __future__ import annotations

import shlex
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from harness.cli.common import (DEFAULT_CACHE, DEFAULT_DEVICES, CacheOpt, DevicesDirOpt, cli_errors, console, err, esc,
                                names_list, print_table, reachable, say_interrupted)
from harness.errors import clip

app = typer.Typer(help="A device farm on Ray: join hosts with their devices, see what each device is doing.",
                  no_args_is_help=True)

RAY_WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min-worker-port / --max-worker-port
RayOpt = Annotated[str, typer.Option("--ray", help="'auto' (the cluster this host belongs to) or HOST:PORT.")]


def need_ray(what: str) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        err.print(f"[bold red]error:[/] {what} needs Ray: pip install 'harness[farm]'")
        raise typer.Exit(2) from None


class FarmProgress:
    """One progress line per device (--each) or per group (--split), and failures as they happen."""

    def __init__(self, progress, mode: str):
        self.progress, self.mode = progress, mode
        self.tasks: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def _key(self, s) -> str:
        return s.group if self.mode == "split" and s.group else s.device

    def device_started(self, s, todo: int) -> None:
        key = self._key(s)
        console.print(f"[bold]{s.device}[/] on {s.host}: {s.conditions.get('runtime')} "
                      f"{s.conditions.get('runtime_version') or ''}; {todo} to measure"
                      + (f" (shared in group {s.group})" if self.mode == "split" else "")
                      + f", {s.skipped} already in the store", highlight=False)
        if key not in self.tasks:
            label = f"group {key}" if self.mode == "split" else key
            self.tasks[key] = self.progress.add_task(label, total=todo, status="")

    def model_done(self, s, o) -> None:
        key = self._key(s)
        self.counts[s.device] = self.counts.get(s.device, 0) + 1
        if not o.ok:
            self.progress.console.print(f"[yellow]failed[/] {s.device} {escape(o.arch.key)}: {o.failure_kind}: "
                                        f"{escape(clip(o.message, 300))}")
        if self.mode == "split":
            status = " · ".join(f"{d} {n}" for d, n in sorted(self.counts.items()))
        else:
            status = f"ok {s.ok} · failed {s.failed}" + (f" · last {o.median_ms:.3f} ms" if o.ok else "")
        if key in self.tasks:
            # a model lost with its host goes back to the queue (another device of the group takes it): it is not
            # done, or the group's bar read 13/12
            done = 0 if o.failure_kind == "device_lost" else 1
            self.progress.update(self.tasks[key], advance=done, status=status)

    def device_stopped(self, s) -> None:
        if s.status != "finished":
            self.progress.console.print(f"[bold red]{s.device} stopped[/] ({s.status}): {escape(s.message)}")


def print_farm_summary(summary, store: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.space}: {summary.requested} architectures, --{summary.mode}")
    suspect = any(d.suspect for d in summary.devices)  # as one device's summary says (the farm's said nothing)
    for col in ("device", "host", "measured", "failed", "already", *(("suspect",) if suspect else ()), "status"):
        table.add_column(col, justify="right" if col in ("measured", "failed", "already", "suspect") else "left")
    for d in summary.devices:
        colour = "green" if d.status in ("finished", "nothing to do") else "red"
        status = f"[{colour}]{d.status}[/]" + (f": {escape(clip(d.message, 120))}" if d.message else "")
        flagged = (f"[yellow]{d.suspect}[/]" if d.suspect else "",) if suspect else ()
        table.add_row((d.series or d.device) + (f" ({d.group})" if d.group else ""), d.host, str(d.ok),
                      str(d.failed), str(d.skipped), *flagged, status)
    print_table(table)
    if suspect:
        console.print("[yellow]suspect:[/] visits measured while other processes or hypervisor steal had the CPU "
                      "(the reason is in the store's `suspect` column; export's <device>_suspect says which "
                      "latencies rest on them): measure those devices again one at a time", highlight=False)
    from harness.cli.measure import print_profile_changes, print_visit_notes

    for d in summary.devices:
        if d.profile_changes:
            print_profile_changes(d.device, d.changed_archs, d.profile_changes)
        print_visit_notes(d, f" ({d.series or d.device})")
    left = {k: v for k, v in summary.left.items() if v}
    if left:
        console.print("not measured yet: " + ", ".join(f"{k}: {v}" for k, v in sorted(left.items()))
                      + f". Rerun the same command to measure what is missing (results are in {store}).")
    console.print(f"{summary.elapsed_s:.1f} s in all, {summary.startup_s:.1f} s to start the devices", highlight=False)


@cli_errors
def run_farm_command(devices: list[str], space: str, *, mode: str, ray_address: str | None, sample, seed: int,
                     all_archs: bool, arch, arch_file, remeasure: bool, max_failures: int, store: Path,
                     devices_dir: Path, cache_dir: Path, remeasure_stale: bool = False, graph: str | None = None,
                     wait: bool = False, model: list[Path] | None = None, batch_size: int | None = None,
                     input_shape: str | None = None, precision: str | None = None, rounds: int | None = None):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from harness.devices.lease import DeviceBusy
    from harness.devices.registry import ProfileRegistry
    from harness.farm.engine import run_farm
    from harness.farm.plan import make_plan
    from harness.models.cache import ModelCache
    from harness.results.store import Store

    from harness.cli.measure import choose_targets, parse_shape

    registry = ProfileRegistry(devices_dir)
    profiles = [registry.get(d).with_workload("the command line",
                                              batch_size=batch_size, input_shape=parse_shape(input_shape),
                                              precision=precision) for d in devices]
    if rounds is not None:  # --rounds: checked against the farm like a profile's policy.rounds
        profiles = [p.model_copy(update={"policy": p.policy.model_copy(update={"rounds": rounds})})
                    for p in profiles]
    if graph is not None:  # a campaign setting, recorded with each campaign's profile
        from harness.models.passes import check_mode

        profiles = [p.model_copy(update={"graph": check_mode(graph)}) for p in profiles]
    if model and ray_address is not None:
        from harness.errors import HarnessError

        raise HarnessError("--model files are measured on this host's devices; leave out --ray (a farm's hosts "
                           "build the search spaces' models themselves)")
    sp, archs = choose_targets(profiles, space, model, sample=sample, seed=seed, all_archs=all_archs, arch=arch,
                               arch_file=arch_file)
    here = [p.name for p in profiles if p.connection.kind == "local"]
    if ray_address is None and len(here) > 1:  # they share this machine's CPUs: each slows the other
        err.print(f"[yellow]note:[/] {', '.join(here)} run on this machine's CPUs at the same time, so each slows "
                  "the other (their visits are marked suspect); for clean numbers measure them one after another",
                  highlight=False)
    command = shlex.join(["harness", *sys.argv[1:]])
    with ExitStack() as stack:
        if ray_address is None:  # stand-ins served for this command (ADB serial `virtual`), as for one device
            profiles = [stack.enter_context(reachable(p)) for p in profiles]
        st = stack.enter_context(Store(store))

        def fresh_plan():
            return make_plan(st, profiles, sp, archs, mode, remeasure, remeasure_stale)  # type: ignore[arg-type]

        def say_waiting(h) -> None:
            err.print(f"waiting: {escape(h.device)} is being measured by {escape(h.describe())}", highlight=False)

        plan = fresh_plan()
        if not any(q.todo for q in plan.queues.values()):
            console.print(f"all {len(archs)} architectures are already in {store} for "
                          f"{', '.join(devices)}; nothing to do (--remeasure to measure again).")
            from harness.campaign import changed_setup
            from harness.cli.measure import print_profile_changes

            for p in profiles:
                changes, n_changed = changed_setup(st, p, sp.name, [a.key for a in archs])
                if changes:
                    print_profile_changes(p.name, n_changed, changes)
            return None
        if ray_address is not None:
            need_ray("--ray")
            from harness.farm.ray_lanes import connect, ray_lanes

            head = connect(ray_address)
            if ray_address == "auto":  # it may be a cluster someone else started on this host: say which
                err.print(f"(--ray auto: the Ray cluster at {esc(head)})", highlight=False)
            waited: list[str] = []

            def on_actor_wait(h) -> None:
                waited.append(h.device)
                say_waiting(h)

            try:
                lanes = ray_lanes(plan, wait, on_actor_wait)
            except DeviceBusy as e:
                err.print(f"[bold red]busy:[/] {escape(str(e))}", highlight=False)
                raise typer.Exit(3) from None
            if waited:  # the farm command waited for has measured some of the list meanwhile
                plan.refresh(fresh_plan())
        else:
            from harness.farm.local import local_lanes

            lanes = local_lanes(plan, ModelCache(cache_dir))
        progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                            TextColumn("{task.fields[status]}"), console=err, transient=False)
        try:
            with progress:
                summary = run_farm(st, plan, lanes, command=command, observer=FarmProgress(progress, mode),
                                   max_consecutive_failures=max_failures, lease_wait=None if wait else 0.0,
                                   on_lease_wait=say_waiting, replan=fresh_plan, machines=ray_address is None)
        except DeviceBusy as e:
            err.print(f"[bold red]busy:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            say_interrupted("\n[yellow]interrupted[/]: every finished model is in the store; rerun the same command "
                            "to measure the rest.")  # once: the entry point then says nothing more
            raise typer.Exit(130) from None
    print_farm_summary(summary, store)
    if not summary.finished:
        stopped = ", ".join(d.device for d in summary.stopped()) or "none"
        err.print(f"[yellow]not every device finished[/] (stopped: {stopped})")
        raise typer.Exit(1)
    nothing = [d.device for d in summary.devices if d.failed and not d.ok]
    if nothing:  # as for one device: a script must not read "finished, 0 measured" as success
        err.print(f"[bold red]nothing was measured[/] on {', '.join(nothing)}: every visit failed (kinds above; the "
                  "failures are in the store)", highlight=False)
        raise typer.Exit(1)
    return summary


@app.command("join")
@cli_errors
def join(
    address: Annotated[Optional[str], typer.Argument(help="HOST:PORT of the farm's Ray head.")] = None,
    head: Annotated[bool, typer.Option("--head", help="Start the farm's head here instead of joining one.")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of a new head (--head).")] = 6379,
    device: Annotated[Optional[list[str]], typer.Option(
        "--device", "-d", callback=names_list,
        help="Offer only these devices (repeat or comma-separate; default: every profile in --devices-dir).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Check the devices and print the `ray start` command only.")] = False,
    devices_dir: DevicesDirOpt = DEFAULT_DEVICES,
    cache_dir: CacheOpt = DEFAULT_CACHE,
) -> None:
    """Join this host, with the devices attached to it, to a farm (wraps `ray start`).

    Each device in ./devices (or each --device) must answer `harness devices check`; it is offered as the
    Ray resource device:NAME with its profile digest, so `harness measure --ray ADDRESS --device NAME`
    runs its models here. Exported models are cached in --cache-dir on this host.
    """
    from harness.devices.registry import ProfileRegistry
    from harness.farm import join as j
    from harness.farm.plan import farm_digest

    if head and address:
        err.print("[bold red]error:[/] give either ADDRESS (join a farm) or --head (start one), not both")
        raise typer.Exit(2)
    if not head and not address:
        err.print("[bold red]error:[/] give the head's ADDRESS (HOST:PORT), or --head to start a farm here")
        raise typer.Exit(2)
    from harness.farm.address import host_port

    if address and not host_port(address):
        err.print(f"[bold red]error:[/] ADDRESS {escape(address)!r}: expected HOST:PORT of the farm's Ray head "
                  "(e.g. 10.0.0.5:6379, as `harness farm join --head` prints)")
        raise typer.Exit(2)
    if head and RAY_WORKER_PORTS[0] <= port <= RAY_WORKER_PORTS[1]:
        err.print(f"[bold red]error:[/] --port {port} lies in the range Ray gives its workers "
                  f"({RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]}, `ray start --min-worker-port/--max-worker-port`) "
                  "and `ray start` refuses it; pick a port outside it (the default is 6379)")
        raise typer.Exit(2)
    profiles = j.join_profiles(ProfileRegistry(devices_dir), device)
    checks = j.check_devices(profiles)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else "[bold red]FAILED[/]"
        console.print(f"{c.profile.name}: {mark} {escape(c.message)}  digest {farm_digest(c.profile)}", highlight=False)
    bad = [c.profile.name for c in checks if not c.ok]
    if bad:
        err.print(f"[bold red]error:[/] {', '.join(bad)} did not answer; fix the device or leave it out with "
                  "--device, then join again")
        raise typer.Exit(2)
    resources, labels = j.node_resources(profiles)
    args = j.ray_start_args(address, resources, labels, head=head, port=port)
    if dry_run:
        console.print(shlex.join(args), highlight=False, markup=False, soft_wrap=True)
        return
    need_ray("harness farm join")
    if address:
        j.claimed_elsewhere(address, profiles)
    code, stderr = j.run_ray_start(args, cache_dir)
    if code != 0:
        err.print(f"[bold red]error:[/] `ray start` failed (exit {code}): {esc(j.ray_start_failure(stderr))}",
                  highlight=False)
        raise typer.Exit(2)
    if stderr.strip():  # Ray's own notes (the node's IP, the dashboard): the user may want them
        err.print(esc(stderr.rstrip()), highlight=False)
    console.print(f"joined with {len(profiles)} device(s): {', '.join(p.name for p in profiles)}. "
                  "`ray stop` leaves the farm.")


@app.command("status")
@cli_errors
def status(ray_address: RayOpt = "auto") -> None:
    """Hosts of the farm, the devices each offers, and what each device is measuring now."""
    need_ray("harness farm status")
    from rich.table import Table

    from harness.farm.ray_lanes import connect
    from harness.farm.status import cluster_status

    head = connect(ray_address)
    hosts, devices = cluster_status()
    if ray_address == "auto":
        console.print(f"(the Ray cluster at {esc(head)})", highlight=False)
    t = Table(title="hosts")
    for col in ("node", "address", "alive", "CPUs", "devices"):
        t.add_column(col)
    for h in hosts:
        t.add_row(h.node, h.address, "yes" if h.alive else "[red]no[/]", f"{h.cpus:g}", ", ".join(h.devices) or "-")
    print_table(t)
    t = Table(title="devices")
    for col in ("device", "host", "state", "measuring", "queued", "done", "per min", "profile digest"):
        t.add_column(col)
    fmt = lambda v, f="{}": "-" if v is None else f.format(v)  # noqa: E731
    for d in devices:
        t.add_row(d.device, d.host, d.state, escape(d.measuring or "-"), fmt(d.queued), fmt(d.done),
                  fmt(d.per_minute, "{:.1f}"), d.digest or "-")
    print_table(t)
