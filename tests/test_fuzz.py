"""Property-based fuzzing (hypothesis) of every parser that takes outside input, and of the phone's shell.

Each property says: whatever the input, the result is either a valid value or the module's own typed
error, never a traceback, a hang or an impossible value. CI runs a few hundred cases per target (fixed
seed); ``benchmarks/fuzz.py`` runs many more with a random seed (HARNESS_FUZZ_EXAMPLES, HARNESS_FUZZ_SEED).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError, ParseError, ProfileError

EXAMPLES = int(os.environ.get("HARNESS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="HARNESS_FUZZ_SEED" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much],
                database=None)

NB201_KEY = "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
weird_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


# --- the importer ----------------------------------------------------------------------------------------
COLUMNS = ["nb201_index", "arch_str", "dev_a_ms", "dev_b_ms", "acc_top1", "flops", "x_ms", "=cmd_ms", "a b_ms",
           "_ms", "dev_a_ms", "@x", "ks", "e", "d", "resolution", "op_idx_list"]
CELLS = ["", "0", "0.0", "1.5", "2", "-1", "inf", "-inf", "nan", "NaN", "1e400", "abc", "15624", "15625", "-0",
         NB201_KEY, "|bad~0|", "[1, 2]", "=1+1", " 3 ", "1,5"]
cell = st.one_of(st.sampled_from(CELLS), st.integers(0, 15624).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), weird_text)
column = st.one_of(st.sampled_from(COLUMNS), weird_text, weird_text.map(lambda s: s + "_ms"))


@st.composite
def tables(draw) -> bytes:
    cols = draw(st.lists(column, min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols)), max_size=8))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    w.writerows(rows)
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def fuzz_store():
    from harness.results.store import Store

    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "fuzz.db") as store:
        yield store, Path(d)


def _counts(store) -> dict[str, int]:
    return {t: store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("devices", "imports", "imported_latencies", "arch_metrics")}


@FUZZ
@given(data=tables(), packing=st.sampled_from(["csv", "gz", "gz-truncated"]), allow_zero=st.booleans())
def test_fuzz_importer(fuzz_store, data, packing, allow_zero):
    from harness.results.importer import import_table

    store, folder = fuzz_store
    path = folder / ("t.csv" if packing == "csv" else "t.csv.gz")
    if packing != "csv":
        data = gzip.compress(data)
        data = data[: len(data) // 2] if packing == "gz-truncated" else data
    path.write_bytes(data)
    before = _counts(store)
    try:
        import_table(store, path, allow_zero=allow_zero)
    except HarnessError:
        assert _counts(store) == before, "a refused file must change nothing"
    values = [v for (v,) in store.db.execute("SELECT latency_ms FROM imported_latencies")]
    assert all(math.isfinite(v) and (v > 0 or (allow_zero and v == 0) or v == 0) for v in values)
    names = [n for (n,) in store.db.execute("SELECT name FROM devices")]
    assert all(n[:1].isalnum() for n in names)


# --- the profile loader ------------------------------------------------------------------------------------
json_like = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), weird_text),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(weird_text, inner, max_size=4),
                         max_leaves=20)
field_values = st.one_of(json_like, st.sampled_from([".inf", "-1", "0", "1e999", "local", "ssh", "adb", "tflite",
                                                     "onnxruntime", "fastest", "all"]))


@st.composite
def profiles(draw) -> dict:
    """Mostly-valid profiles with some fields replaced by junk, so validation is exercised deeply."""
    body = {"name": "p", "connection": {"kind": draw(st.sampled_from(["local", "ssh", "adb", "x"]))},
            "runtime": {"name": draw(st.sampled_from(["onnxruntime", "tflite", "x"]))}, "policy": {}}
    for section, keys in (("connection", ["host", "user", "port", "serial", "taskset", "connect_timeout_s",
                                          "reconnect_attempts", "simulator", "bogus"]),
                          ("runtime", ["threads", "delegate", "options", "execution_provider"]),
                          ("policy", ["warmup_runs", "timed_runs", "min_seconds", "cooldown_seconds",
                                      "timeout_seconds", "input_seed"]),
                          (None, ["description", "hardware", "name", "extra"])):
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            target = body if section is None else body[section]
            target[key] = draw(field_values)
    return body


@FUZZ
@given(data=st.one_of(profiles(), json_like))
def test_fuzz_profile_model(data):
    from harness.devices.profile import parse_profile

    try:
        p = parse_profile(data, "fuzz")
    except ProfileError as e:
        assert len(str(e)) < 20_000
        return
    pol = p.policy
    assert all(math.isfinite(v) for v in (pol.min_seconds, pol.cooldown_seconds, pol.timeout_seconds))
    assert 0 <= pol.input_seed < 2**32


yaml_text = st.one_of(
    weird_text,
    st.lists(st.sampled_from(["name: p", "connection: {kind: local}", "runtime: {name: tflite}", "policy:",
                              "  timed_runs: .inf", "  input_seed: -1", "a: &a [1, 2]", "b: [*a, *a, *a]",
                              "c: *b", "- x", "{", "]", "'", "!!python/object:os.system", "\t", ": :",
                              "description: *a", "<<: *a", "&x", "*x"]), max_size=10).map("\n".join))


@FUZZ
@given(text=yaml_text)
def test_fuzz_profile_file(tmp_path_factory, text):
    from harness.devices.profile import load_profile

    path = tmp_path_factory.getbasetemp() / "fuzz-profile.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_profile(path)
    except ProfileError as e:
        assert "fuzz-profile.yaml" in str(e) and len(str(e)) < 20_000


# --- the runner protocol: what the client accepts, and what the worker survives ---------------------------
answers = st.one_of(
    json_like.map(json.dumps),
    st.fixed_dictionaries({"ok": st.sampled_from([True, False, 1, "true", None])},
                          optional={"timed_ms": json_like | st.lists(st.floats(), max_size=4),
                                    "warmup_ms": json_like | st.lists(st.floats(), max_size=4),
                                    "init_ms": json_like, "kind": json_like, "message": json_like,
                                    "conditions_before": json_like, "versions": json_like,
                                    "sha256": st.text("0123456789abcdef", min_size=63, max_size=65)})
    .map(lambda d: json.dumps(d)),
    weird_text, st.sampled_from(["", "{", "[" * 5000, '{"ok": true, "timed_ms": [NaN]}']))


@FUZZ
@given(line=answers)
def test_fuzz_runner_answers(line):
    from harness.devices import protocol

    try:
        obj = protocol.decode(line, "fuzz")
        if obj["ok"]:
            for model in (protocol.RunAnswer, protocol.HelloAnswer, protocol.Sha256Answer):
                try:
                    ans = protocol.validated(model, obj, line, "fuzz")
                except ParseError:
                    continue
                if model is protocol.RunAnswer:
                    assert ans.timed_ms and all(math.isfinite(v) and v > 0 for v in ans.timed_ms + ans.warmup_ms)
    except ParseError as e:
        assert len(str(e)) < 2_000


requests = st.one_of(
    json_like.map(json.dumps), weird_text,
    st.fixed_dictionaries({"op": st.sampled_from(["run", "hello", "sha256", "nope"]) | json_like},
                          optional={"runtime": st.sampled_from(["onnxruntime", "tflite"]) | json_like,
                                    "model": st.just("/nonexistent/m.onnx") | json_like, "path": json_like,
                                    "threads": json_like, "timed_runs": json_like, "warmup_runs": json_like,
                                    "min_seconds": json_like, "seed": json_like, "options": json_like})
    .map(json.dumps))


@FUZZ
@given(line=requests)
def test_fuzz_runner_worker(line):
    from harness.devices import runner

    resp = runner.answer(line)
    assert isinstance(resp, dict) and isinstance(resp["ok"], bool)
    json.dumps(resp)  # every answer can be sent
    if not resp["ok"]:
        assert resp["kind"] in ("parse_error", "device_error") and isinstance(resp["message"], str)


# --- benchmark_model's output ------------------------------------------------------------------------------
BM_LINES = ["INFO: Initialized session in 12.5ms.", "Initialized session in -3ms", "Initialized session in xms.",
            "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if "
            "exceeding 150 seconds.", "Running benchmark for at least 50 iterations and at least 1 seconds.",
            "Running benchmark for at least nan iterations and at least 1 seconds.",
            "INFO: count=1 curr=61541", "count=50 first=100 curr=95 min=90 max=120 avg=99.5 std=4 p5=91 "
            "median=98 p95=110", "count=3 curr=12(all same)", "count=0", "count=5 curr=-4 min=-9 max=-1 avg=-5 std=1",
            "count=2 curr=0 min=0 max=0 avg=0 std=0", "count=1.5 curr=3", "count=4 curr=inf min=1 max=2 avg=3 std=0",
            "INFO: Inference timings in us: Init: 12000, First inference: 61541, Warmup (avg): 61541, "
            "Inference (avg): 58000", "Average inference timings in us: Warmup: nan, Init: 1, no stats: 3",
            "Inference timings in us: Init: -1, Inference (avg): -2",
            "INFO: Memory footprint delta from the start of the tool (MB): init=3.1 overall=9.8",
            "- VmRSS : 12 MB", "Num threads: [4]", "The input model file size (MB): 0.5", "ERROR: boom",
            "WARN: careful", "Graph: [/data/local/tmp/m.tflite]", "curr=5 count=2 min=4 max=6 avg=5 std=1"]


number = st.one_of(st.integers(-10, 10**9).map(str), st.floats().map(repr), st.sampled_from(["x", "", "1e999", "-0"]))


@st.composite
def stat_lines(draw) -> str:
    keys = draw(st.lists(st.sampled_from(["count", "first", "curr", "min", "max", "avg", "std", "p5", "median",
                                          "p95"]), min_size=1, max_size=10, unique=True))
    return " ".join(f"{k}={draw(number)}" for k in keys) + draw(st.sampled_from(["", "(all same)"]))


@st.composite
def benchmark_outputs(draw) -> list[str]:
    """benchmark_model-shaped output: phases (a Running line, then statistics) among other lines."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        lines += draw(st.lists(st.one_of(st.sampled_from(BM_LINES), weird_text), max_size=3))
        lines.append(f"Running benchmark for at least {draw(number)} iterations and at least {draw(number)} seconds.")
        lines.append(draw(st.one_of(stat_lines(), st.sampled_from(BM_LINES))))
        lines.append(draw(st.sampled_from([f"Initialized session in {draw(number)}ms.", ""])))
    return lines


@FUZZ
@given(lines=benchmark_outputs(), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_benchmark_model_output(lines, newline):
    from harness.devices.adb_benchmark import parse_output

    try:
        out = parse_output(newline.join(lines))
        stat_ = out.timed_stat()
        init = out.init()
    except ParseError:
        return
    values = [stat_.avg_us, stat_.min_us, stat_.max_us, stat_.std_us, stat_.curr_us, init]
    assert all(v is not None and math.isfinite(v) and v >= 0 for v in values)


# --- the phone's shell ----------------------------------------------------------------------------------
WORDS = ["echo", "ls", "cat", "rm", "-r", "-f", "mkdir", "-p", "chmod", "4755", "777", "u+x", "touch", "mv", "stat",
         "-c", "%a", "test", "-e", "-d", "getprop", "ro.product.model", "grep", "x", "cd", "..", "/", "/data",
         "/data/local/tmp", "/proc/cpuinfo", "/sys/devices/system/cpu/cpu0", "../../..", "/etc/passwd", "*", "?",
         "[a]", "f", "d/f", "$HOME", "$?", "$(", ")", "`", "'", '"', ";", "&&", "||", "|", ">", ">>", "<", "2>&1",
         "&", "\\", "\x00", "sha256sum", "df", "id", "uname", "-a", "nproc", "taskset", "f0", "pkill", "export",
         "A=1", "exit", "true", "false", "whoami", "pwd", "$((1+1))", "${x}", "ln", "-s"]


@pytest.fixture(scope="module")
def fuzz_phone():
    from tests.test_hardening import make_shell

    with tempfile.TemporaryDirectory() as d:
        outside = Path(d) / "outside.txt"
        outside.write_text("host file")
        phone, run = make_shell(Path(d) / "phone")
        yield run, Path(d) / "phone", outside


@FUZZ
@given(words=st.lists(st.one_of(st.sampled_from(WORDS), weird_text), max_size=10),
       joiner=st.sampled_from([" ", "", "  "]))
def test_fuzz_phone_shell(fuzz_phone, words, joiner):
    run, root, outside = fuzz_phone
    status, out = run(joiner.join(words))
    assert isinstance(status, int) and 0 <= status <= 255
    assert "Traceback" not in out
    assert outside.read_text() == "host file"
    for p in root.rglob("*"):
        if not p.is_symlink():
            assert p.stat().st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0, p
