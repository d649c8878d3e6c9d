"""`harness devices list | show | check`."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import (DEFAULT_DEVICES, DevicesDirOpt, cli_errors, console, err, esc,
                                print_table, reachable, working)
from harness.errors import HarnessError

app = typer.Typer(help="Device profiles: list them, show one, check that a device is reachable.",
                  no_args_is_help=True)


@app.command("list")
@cli_errors
def list_devices(devices_dir: DevicesDirOpt = DEFAULT_DEVICES) -> None:
    """List the built-in profiles and yours (./devices/*.yaml). Broken files are reported, not skipped."""
    from harness.devices.registry import ProfileRegistry

    if devices_dir.exists() and not devices_dir.is_dir():
        raise HarnessError(f"--devices-dir (or HARNESS_DEVICES) {devices_dir} is a file; point it at the folder "
                           "that holds your *.yaml profiles")
    good, bad = ProfileRegistry(devices_dir).load_all()
    from rich import box

    table = Table(title="device profiles", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("name", "via", "runtime", "source"):
        table.add_column(col, no_wrap=True)
    table.add_column("hardware", ratio=1)
    builtin = {e.name for e in ProfileRegistry(None).entries().values()}
    for entry, p in good:
        origin = "user (overrides built-in)" if entry.origin == "user" and p.name in builtin else entry.origin
        table.add_row(p.name, p.connection.kind, f"{p.runtime.name} ×{p.runtime.threads}",
                      origin, escape(p.hardware or p.description))
    print_table(table)
    if not devices_dir.is_dir():
        console.print(esc(f"(no folder {devices_dir.resolve()}: built-in profiles only; write your profiles there, "
                          "or point --devices-dir / HARNESS_DEVICES at the folder that holds them)"), highlight=False)
    for e in bad:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
    if bad:
        raise typer.Exit(1)


@app.command("show")
@cli_errors
def show(name: str = typer.Argument(..., help="Profile name, e.g. local-onnx"),
         devices_dir: DevicesDirOpt = DEFAULT_DEVICES) -> None:
    """Print a profile as harness reads it (defaults filled in) and where it comes from."""
    from harness.devices.profile import profile_yaml
    from harness.devices.registry import ProfileRegistry

    reg = ProfileRegistry(devices_dir)
    profile = reg.get(name)
    console.print(f"# {reg.entries()[name].origin}: {esc(reg.entries()[name].path)}", highlight=False)
    # soft_wrap: the terminal may fold a long line, but rich must not break one, or the YAML would not load again
    console.print(profile_yaml(profile), highlight=False, markup=False, soft_wrap=True)


@app.command("check")
@cli_errors
def check(name: str = typer.Argument(..., help="Profile name"),
          devices_dir: DevicesDirOpt = DEFAULT_DEVICES) -> None:
    """Check that the device is reachable and its runtime is present; prints the runtime version."""
    from harness.devices.driver import checked, make_driver
    from harness.devices.registry import ProfileRegistry

    with reachable(ProfileRegistry(devices_dir).get(name)) as profile, working(f"checking {name}"):
        report = checked(make_driver(profile))
        facts: dict = {}
        if report.ok:
            from harness.errors import DriverError

            driver = make_driver(profile)
            try:
                facts = driver.stability()
            except DriverError as e:
                facts = {"error": str(e)}
            finally:
                driver.cleanup()
    mark = "[green]ok[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"{esc(name)}: {mark}  reachable={'not tried' if report.reachable is None else report.reachable}  runtime={report.runtime} "
                  f"version={report.runtime_version or '-'}")
    for k, v in report.details.items():
        if isinstance(v, dict):  # versions and GPU facts: one line each, not a Python dict
            console.print(f"  {esc(k)}:", highlight=False)
            for sub, value in v.items():
                if value not in (None, "", {}):
                    console.print(f"    {esc(sub)}: {esc(' '.join(str(value).split()))}", highlight=False)
        elif v is not None:
            console.print(f"  {esc(k)}: {esc(v)}", highlight=False)
    if report.message:
        console.print(f"  {escape(report.message)}")
    for w in report.warnings:
        console.print(f"  [yellow]warning:[/] {escape(w)}")
    if report.ok:
        from harness.measure.stability import warnings

        if facts.get("error"):
            console.print(f"  stability: not checkable: {escape(facts['error'])}")
        elif not facts:
            console.print("  stability: this driver cannot observe the device's state")
        else:
            found = warnings(facts)
            console.print("  stability: " + ("[green]nothing found that endangers stable timing[/]" if not found
                                             else f"[yellow]{len(found)} warning(s)[/]"))
            for w in found:
                console.print(f"    [yellow]![/] {escape(w)}", highlight=False)
            for u in facts.get("unavailable") or []:
                console.print(f"    ? {escape(u)} not available on this device", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("trust")
@cli_errors
def trust(name: str = typer.Argument(..., help="Profile name of an SSH device"),
          yes: bool = typer.Option(False, "--yes", "-y", help="Record the key without asking."),
          devices_dir: DevicesDirOpt = DEFAULT_DEVICES) -> None:
    """Show an SSH device's host key fingerprint and record it in the profile's known_hosts.

    Accepting a host key is a deliberate act: compare the fingerprint with the one the device prints
    (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the device) before you say yes.
    """
    from harness.devices.registry import ProfileRegistry
    from harness.devices.ssh import fetch_host_key, fingerprint, record_host_key, recorded_host_keys

    profile = ProfileRegistry(devices_dir).get(name)
    conn = profile.connection
    if conn.kind != "ssh":
        err.print(f"[bold red]error:[/] {esc(name)} is a {conn.kind} device; only SSH devices have host keys")
        raise typer.Exit(2)
    key = fetch_host_key(conn.host, conn.port, conn.connect_timeout_s)
    target = conn.known_hosts or "~/.ssh/known_hosts"
    console.print(f"{esc(conn.host)}:{conn.port} presents [bold]{esc(fingerprint(key))}[/]", highlight=False)
    on_record = recorded_host_keys(target, conn.host, conn.port)
    if on_record.get(key.get_name()) == key and len(on_record) == 1:
        console.print(f"already recorded in {esc(target)}: nothing to do", highlight=False)
        return
    old = [k for k in on_record.values() if k != key]
    if old:  # the CHANGED case `devices check` refused (a key of another type too): say what is replaced
        console.print(f"[bold yellow]this replaces a different key on record[/] "
                      f"({esc(', '.join(fingerprint(k) for k in old))}): accept only if the device was reinstalled "
                      "or its keys regenerated", highlight=False)
    question = f"{'Replace' if on_record else 'Record'} the key for {name} in {target}?"
    if not yes and not typer.confirm(question, default=False):
        raise typer.Exit(1)
    path = record_host_key(target, conn.host, conn.port, key)
    console.print(f"recorded in {esc(path)}", highlight=False)
