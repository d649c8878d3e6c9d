"""Ctrl-C at any point ends with the campaign recorded as interrupted, never `running`, nothing half-written.

Two ways in: a KeyboardInterrupt injected at every call into the store (before and after the call does
its work), and real SIGINTs sent to `python -m harness measure` the way a terminal and `timeout -s INT`
send them (to the whole process group, twice for `timeout`), at delays from start-up to mid-campaign.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import interrupts
from harness.campaign import run_campaign
from harness.models.cache import ModelCache
from harness.models.spaces import get_space
from harness.results.store import Store
from tests.conftest import write_profile

SPACE = get_space("nb201")
ARCHS = SPACE.parse_many(["5", "77"])
STORE_CALLS = ["start_campaign", "device_id", "arch_id", "set_campaign_conditions", "record_measurement",
               "finish_campaign", "measured_keys", "transaction"]


def _runner_children() -> list[int]:
    """Runner workers started by this test process that are still alive."""
    me, out = str(os.getpid()), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"runner.py" in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(d.name))
    return out


class Injector:
    """Wraps the store's methods on one instance; raises KeyboardInterrupt at the n-th call."""

    def __init__(self, store: Store, at: int | None, when: str):
        self.calls: list[str] = []
        self.at, self.when, self.fired = at, when, False
        for name in STORE_CALLS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name, fn):
        def call(*args, **kwargs):
            self.calls.append(name)
            hit = len(self.calls) - 1 == self.at and not self.fired
            if hit and self.when == "before":
                self.fired = True
                raise KeyboardInterrupt
            result = fn(*args, **kwargs)
            if hit:
                self.fired = True
                if name == "transaction":  # a context manager: interrupt inside the with-block instead
                    return _interrupting(result)
                raise KeyboardInterrupt
            return result
        return call


class _interrupting:
    def __init__(self, cm):
        self.cm = cm

    def __enter__(self):
        self.cm.__enter__()
        raise_in_body = KeyboardInterrupt()
        self.cm.__exit__(type(raise_in_body), raise_in_body, None)
        raise raise_in_body

    def __exit__(self, *exc):
        return False


def _check_store(path: Path, where: str = "") -> tuple[list[str], int]:
    with sqlite3.connect(path) as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM campaigns")]
        orphans = db.execute("SELECT COUNT(*) FROM measurements m WHERE m.status = 'ok' AND NOT EXISTS "
                             "(SELECT 1 FROM runs r WHERE r.measurement_id = m.id)").fetchone()[0]
        ok = db.execute("SELECT COUNT(DISTINCT arch_id) FROM measurements WHERE status = 'ok'").fetchone()[0]
    assert orphans == 0, f"{where}: a measurement without its runs"
    assert "running" not in statuses, (where, statuses)
    return statuses, ok


def _interrupt_at(points, probe_calls, profile, cache, tmp_path, resume_all: bool) -> None:
    for when, at in points:
        path = tmp_path / f"{when}-{at}.db"
        with Store(path) as st:
            inj = Injector(st, at, when)
            with pytest.raises(KeyboardInterrupt):
                run_campaign(st, profile, SPACE, ARCHS, cache=cache)
            assert inj.fired
        where = f"KeyboardInterrupt {when} call #{at} ({probe_calls[at]})"
        Store(path).close()  # opening adds a measurement kept beside the store when Ctrl-C hit its write
        statuses, ok = _check_store(path, where)
        assert statuses in ([], ["interrupted"]), where
        assert ok <= len(ARCHS), where
        assert not _runner_children(), f"{where}: a runner worker was left behind"
        if resume_all or probe_calls[at] == "record_measurement":
            with Store(path) as st:  # and the same command resumes with what is missing
                s = run_campaign(st, profile, SPACE, ARCHS, cache=cache)
                assert s.skipped == ok and s.ok == len(ARCHS) - ok, where


def _probe(registry, tmp_path, cache):
    with Store(tmp_path / "count.db") as st:
        probe = Injector(st, None, "before")
        run_campaign(st, registry.get("fast-onnx"), SPACE, ARCHS, cache=cache)
    assert {"start_campaign", "record_measurement", "finish_campaign"} <= set(probe.calls)
    return probe.calls


def test_keyboard_interrupt_at_each_kind_of_store_call(registry, tmp_path, cache_dir):
    """Fast: before the first call of each kind, and after each campaign-level write."""
    cache = ModelCache(cache_dir)
    calls = _probe(registry, tmp_path, cache)
    first = {name: calls.index(name) for name in dict.fromkeys(calls)}
    points = [("before", i) for i in first.values()]
    points += [("after", i) for i, name in enumerate(calls)
               if name in ("start_campaign", "set_campaign_conditions", "finish_campaign")]
    points.append(("after", calls.index("record_measurement")))
    _interrupt_at(points, calls, registry.get("fast-onnx"), cache, tmp_path, resume_all=False)


@pytest.mark.slow
def test_keyboard_interrupt_at_every_store_call(registry, tmp_path, cache_dir):
    cache = ModelCache(cache_dir)
    calls = _probe(registry, tmp_path, cache)
    points = [(when, at) for when in ("before", "after") for at in range(len(calls))]
    _interrupt_at(points, calls, registry.get("fast-onnx"), cache, tmp_path, resume_all=True)


def test_a_swallowed_interrupt_still_stops_the_campaign(registry, store_path, cache_dir):
    """A SIGINT that a library's bare except ate is still counted; the next model boundary stops."""
    interrupts.install()
    try:
        with Store(store_path) as st:
            class Swallow:
                def started(self, summary, todo):
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(1)
                    except BaseException:  # noqa: BLE001 — what some libraries do
                        pass

                def model_done(self, outcome, summary):
                    pass

            with pytest.raises(KeyboardInterrupt):
                run_campaign(st, registry.get("fast-onnx"), SPACE, ARCHS, cache=ModelCache(cache_dir),
                             observer=Swallow())
        assert _check_store(store_path) == (["interrupted"], 0)
    finally:
        interrupts.uninstall()


def test_shielded_holds_a_sigint_until_the_block_is_done():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(1)
    assert done == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupts.requested()  # a library user's next campaign is not stopped by it


# --- real signals, through the real entry point -----------------------------------------------------
def _measure(cli_env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "measure", "--device", "sigint", "--sample", "400",
                             "--seed", "3"], env=cli_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _committed(store: Path) -> int:
    try:
        with sqlite3.connect(store, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM measurements WHERE status = 'ok'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("style", ["terminal", "timeout"])
def test_real_sigint_at_varied_delays(cli_env, devices_dir, tmp_path, style):
    """Delays from start-up (imports) to mid-campaign; the terminal signals the process group, `timeout`
    signals the process and then its group. Each run must stop within seconds with exit code 130."""
    write_profile(devices_dir, "sigint", {"name": "onnxruntime"}, {"cooldown_seconds": 0.05})
    store = Path(cli_env["HARNESS_STORE"])
    for delay in (0.3, 1.5, 3.0, "1 model", "5 models"):  # start-up, imports, profile checks; mid-campaign
        for stale in (store, *store.parent.glob(store.name + "-*")):  # the store and its WAL/SHM files
            stale.unlink(missing_ok=True)
        proc = _measure(cli_env, tmp_path)
        if isinstance(delay, str):  # mid-campaign: once that many models are committed
            deadline = time.time() + 120
            while _committed(store) < int(delay.split()[0]) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
        else:
            time.sleep(delay)
        if style == "timeout":
            os.kill(proc.pid, signal.SIGINT)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.time()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"SIGINT {delay} s after start was ignored")
        where = f"SIGINT ({style}) {delay} s after start"
        assert proc.returncode == 130, (where, out, err)
        assert "Traceback" not in err and "interrupted" in err, (where, err)
        assert time.time() - t0 < 15, where
        if store.exists():
            statuses, _ = _check_store(store)
            assert statuses in ([], ["interrupted"]), where


class _SigintAfter:
    """A store connection whose statements starting with ``prefix`` are followed by ``sigint()``: where Python
    raises a SIGINT that arrived during the C call (right after it returns)."""

    def __init__(self, real: sqlite3.Connection, prefix: str, sigint):
        self.real, self.prefix, self.sigint = real, prefix, sigint

    def __getattr__(self, name):
        return getattr(self.real, name)

    def execute(self, sql, *args):
        cur = self.real.execute(sql, *args)
        if sql.startswith(self.prefix):
            self.sigint()
        return cur


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


def test_ctrl_c_landing_during_begin_leaves_no_transaction_open(tmp_path):
    """Python raises a SIGINT's KeyboardInterrupt right after the C call that was running returns: one landing
    during BEGIN IMMEDIATE used to leave the transaction open, so the campaign's end joined it and never
    committed (a CI run saw a campaign stay 'running' after a clean exit 130)."""
    from harness.results.store import Store

    path = tmp_path / "s.db"
    with Store(path) as st:
        cid = st.start_campaign("dev", "nb201", {}, "digest", 1)
        real = st.db
        st.db = _SigintAfter(real, "BEGIN", _raise_keyboard_interrupt)
        with pytest.raises(KeyboardInterrupt):
            st.set_campaign_conditions(cid, {"x": 1})
        st.db = real
        assert not real.in_transaction
        st.finish_campaign(cid, "interrupted", "stopped by the user")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT status FROM campaigns WHERE id = ?", (cid,)).fetchone()[0] == "interrupted"


def test_ctrl_c_landing_during_commit_reports_the_write_done_and_stops_later(tmp_path):
    """The COMMIT went through: the caller must not think the write failed (a measurement would be kept again
    as pending); the counted Ctrl-C stops the command at its next check instead."""
    from harness.results.store import Store

    interrupts.install()
    try:
        with Store(tmp_path / "s.db") as st:
            cid = st.start_campaign("dev", "nb201", {}, "digest", 1)
            real = st.db
            # what the installed handler does: count the SIGINT, then raise
            st.db = _SigintAfter(real, "COMMIT", lambda: interrupts._on_sigint(signal.SIGINT, None))
            st.set_campaign_conditions(cid, {"x": 1})  # no KeyboardInterrupt: it is written
            st.db = real
            assert not real.in_transaction and "x" in real.execute(
                "SELECT conditions_json FROM campaigns WHERE id = ?", (cid,)).fetchone()[0]
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
    finally:
        interrupts.uninstall()


def test_an_error_that_a_ctrl_c_turned_into_is_reported_as_interrupted(capsys):
    """A Ctrl-C landing in a class body being created (a command's lazy import) surfaces as RuntimeError
    ("Error calling __set_name__"), which gave a traceback and exit 1 in a CI run; once a Ctrl-C is counted,
    an unexpected error is its consequence: exit 130, no traceback. Without one, a bug still raises."""
    import typer

    from harness.cli import common

    @common.cli_errors
    def command():
        raise RuntimeError("Error calling __set_name__ on 'Field' instance 'details' in 'CheckReport'")

    with pytest.raises(RuntimeError):  # no Ctrl-C: a real error
        command()
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupts._on_sigint(signal.SIGINT, None)  # counted, as the handler does
        with pytest.raises(typer.Exit) as e:
            command()
        assert e.value.exit_code == 130
    finally:
        interrupts.uninstall()


def test_a_ctrl_c_handled_inside_string_code_still_exits_130_under_dash_m(tmp_path):
    """CPython marks a KeyboardInterrupt that ends string-evaluated code (a dataclass's generated ``__init__``,
    built during a lazy import) as unhandled even when it is caught, and ``python -m`` then dies by SIGINT (-2)
    instead of exiting 130: the CI failure at a SIGINT 0.3 s after start."""
    (tmp_path / "cli_caught_in_exec.py").write_text(
        "import sys\n"
        "import harness.cli\n"
        "def cli_main():\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        sys.exit(130)\n"
        "harness.cli.main = cli_main\n"
        "from harness.__main__ import main\n"
        "main()\n")
    proc = subprocess.run([sys.executable, "-m", "cli_caught_in_exec"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 130, proc.stderr


def test_ctrl_c_in_a_remeasure_campaign_does_not_claim_everything_is_in(cli_env, devices_dir, monkeypatch):
    """'interrupted: 60 of 60 visits are in ...; rerun to measure the rest' counted the earlier visits, though a
    rerun of --remeasure measures all of them again."""
    import importlib

    from tests.conftest import harness

    campaign = importlib.import_module("harness.campaign")  # `harness` here is the test helper
    write_profile(devices_dir, "rm", {"name": "onnxruntime"}, {"cooldown_seconds": 0})
    harness("measure", "-d", "rm", "--space", "nb201", "--arch", "1,2", env=cli_env)

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(campaign, "run_campaign", stopped)
    r = harness("measure", "-d", "rm", "--space", "nb201", "--arch", "1,2", "--remeasure", env=cli_env, check=False)
    said = " ".join(r.stderr.split())
    assert r.returncode == 130 and "this --remeasure campaign finished are in" in said, said
    assert "measure the rest" not in said


@pytest.mark.slow
def test_sigterm_stops_a_campaign_as_ctrl_c_does(cli_env, devices_dir, tmp_path):
    """SIGTERM (timeout's, kill's, systemd's) ended harness at once: the campaign abandoned, not a word said."""
    write_profile(devices_dir, "sigint", {"name": "onnxruntime"}, {"cooldown_seconds": 0.05})
    store = Path(cli_env["HARNESS_STORE"])
    proc = _measure(cli_env, tmp_path)
    deadline = time.time() + 120
    while _committed(store) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    statuses, _ = _check_store(store)
    assert statuses == ["interrupted"]
