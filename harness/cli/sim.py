"""`harness sim adb`: serve a virtual Android phone that speaks the real ADB protocol."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from harness.cli.common import cli_errors, console, err
from harness.errors import HarnessError

app = typer.Typer(help="Device simulators: try the drivers (and adb itself) with no hardware.",
                  no_args_is_help=True)


@app.command("adb")
def adb(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to listen on (0: a free one).")] = 5555,
    root: Annotated[Path, typer.Option(help="Folder holding the phone's storage (/data/local/tmp lives inside); "
                                            "nothing outside it is ever read or written.")] = Path("virtual-phone"),
    host: Annotated[str, typer.Option(help="Address to listen on. Default 127.0.0.1 (this machine only); any "
                                          "other address needs --adb-keys, and admits those keys only.")]
    = "127.0.0.1",
    model: Annotated[Optional[str], typer.Option(
        help="Phone identity: s5e, pixel3, pixel4, virtual, or any name (sets ro.product.model).")] = None,
    auth: Annotated[bool, typer.Option(help="Require RSA key authentication like a real phone; on 127.0.0.1 a new "
                                            "key is allowed as if someone tapped 'Allow USB debugging?'.")] = False,
    adb_keys: Annotated[Optional[Path], typer.Option(
        help="Public keys accepted without asking (adb_keys format: one adbkey.pub per line); beyond 127.0.0.1 "
             "the only ones.")] = None,
    refuse_auth: Annotated[bool, typer.Option(help="Fault: deny every new key ('Allow USB debugging?' -> Deny).")]
    = False,
    drop_after: Annotated[Optional[int], typer.Option(
        min=0, help="Fault: reset the connection when service N+1 is opened (once).")] = None,
    stall_after: Annotated[Optional[int], typer.Option(
        min=0, help="Fault: from service N+1 on, never answer again.")] = None,
    disk_free: Annotated[Optional[int], typer.Option(
        min=0, help="Fault: bytes free on /data; pushes beyond fail with 'No space left on device'.")] = None,
    max_payload: Annotated[int, typer.Option(
        min=4096, max=1024 * 1024, help="Largest ADB packet payload the phone accepts and sends (adb itself "
        "sends up to 256 KiB; a phone offers at least 4 KiB).")] = 1024 * 1024,
) -> None:
    """Serve a virtual phone: `adb connect 127.0.0.1:PORT`, `adb shell`, `adb push/pull` and the ADB driver work.

    Its shell is a small interpreter confined to --root; running the pushed benchmark_model stand-in times the
    model with LiteRT on this machine and prints TFLite benchmark_model's output. Stop with Ctrl-C.

    Security: the phone runs with the host user's rights (yours): whoever can connect can read and write
    files under --root as you. Without --auth any local user can connect, so it listens on 127.0.0.1 only
    unless --host says otherwise; then --adb-keys is required and no other key gets in (nobody is at the phone to
    refuse a new one). Modes set on the phone never carry setuid/setgid/sticky bits onto the host.
    """
    from harness.sim.adb.server import Faults, VirtualPhone, install_stand_in

    keys = []
    if adb_keys is not None:
        try:
            keys = [line for line in adb_keys.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            err.print(f"[bold red]error:[/] cannot read {escape(str(adb_keys))}: {escape(str(e.strerror))}")
            raise typer.Exit(2) from None
        except UnicodeDecodeError:
            err.print(f"[bold red]error:[/] --adb-keys {escape(str(adb_keys))} is not text; it holds public keys, "
                      "one adbkey.pub line each (~/.android/adbkey.pub)")
            raise typer.Exit(2) from None
    local = _loopback(host)
    if not local and not keys:
        # --auth alone let any key in: the phone "taps Allow" for every new key (walk C reached a shell from
        # another machine with a fresh key)
        err.print(f"[bold red]error:[/] --host {escape(host)} lets other machines reach a phone that runs with your "
                  "rights; add --adb-keys FILE (the public keys allowed, e.g. ~/.android/adbkey.pub; no other key "
                  "gets in) or keep --host 127.0.0.1")
        raise typer.Exit(2)
    faults = Faults(drop_after=drop_after, stall_after=stall_after, refuse_auth=refuse_auth, disk_free=disk_free)
    try:
        phone = VirtualPhone(root, host=host, port=port, model=model, auth=auth or bool(keys), adb_keys=keys,
                             accept_new_keys=local, faults=faults, max_payload=max_payload).start()
    except (OSError, ValueError) as e:
        err.print(f"[bold red]error:[/] cannot start the virtual phone: {escape(str(e))}")
        raise typer.Exit(2) from None
    install_stand_in(root)
    console.print(f"virtual phone [bold]{escape(phone.identity.model)}[/] ({escape(str(phone.serial))}) listening on "
                  f"{escape(phone.address)}, storage in {escape(str(root.resolve()))}; `adb connect "
                  f"{escape(phone.address)}`. Ctrl-C stops it.", highlight=False)
    signal.signal(signal.SIGTERM, _stop)
    try:
        phone.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
        raise typer.Exit(0) from None


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop(signum: int, frame: object) -> None:
    """SIGTERM stops the phone like Ctrl-C (its benchmark worker is ended, not orphaned)."""
    raise KeyboardInterrupt


@app.command("trtexec")
@cli_errors
def trtexec(
    install_dir: Annotated[Path, typer.Option("--install", help="Folder to write an executable `trtexec` into.")],
) -> None:
    """Install a stand-in `trtexec` (TensorRT's tool) that times ONNX models with onnxruntime on the CPU.

    It prints trtexec 8.6's output and --exportTimes JSON, so trtexec profiles (local or over SSH) can be
    tried without a GPU. Point a profile's runtime.binary at the printed path. Its numbers are CPU times and
    its device is named as the stand-in, so they never pass for GPU measurements.
    """
    from harness.sim.trtexec import install

    if install_dir.exists() and not install_dir.is_dir():
        raise HarnessError(f"--install {install_dir} is a file; name a folder to write trtexec into")
    path = install(str(install_dir))
    console.print(f"stand-in trtexec: {path}")
