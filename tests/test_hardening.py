"""Adversarial cases from issue 13: every fault gives a clear error, nothing is lost, nothing is escalated."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from harness.devices.registry import ProfileRegistry
from harness.devices.runner_client import RunnerDriver
from harness.errors import ParseError, StoreError
from harness.models.spaces import get_space
from harness.results.store import Store, utcnow


# --- item 2: runner answers are validated ------------------------------------------------------------
class ScriptedChannel:
    """A line channel whose runner answers from a script (what a broken or hostile runner could say)."""

    def __init__(self, answers: list[str]):
        self.answers = list(answers)

    def send(self, line: str) -> None:
        pass

    def receive(self, timeout: float) -> str | None:
        return self.answers.pop(0) if self.answers else ""

    def close(self, force: bool = False) -> None:
        pass

    def diagnostics(self) -> str:
        return ""


HELLO = json.dumps({"ok": True, "protocol": 1, "versions": {"python": "3.11", "onnxruntime": "1.2"},
                    "conditions": {}})


class ScriptedDriver(RunnerDriver):
    kind = "local"

    def __init__(self, profile, answers: list[str]):
        super().__init__(profile)
        self.script = [HELLO, *answers]

    def _open_channel(self):
        return ScriptedChannel(self.script)

    def push(self, artifact) -> str:
        return str(artifact.path)


GOOD = {"ok": True, "init_ms": 1.0, "warmup_ms": [1.0], "timed_ms": [1.0, 2.0]}
BAD_ANSWERS = [
    '{"ok": true, "init_ms": 1.0, "warmup_ms": [], "timed_ms": [NaN, 1.0]}',
    json.dumps({**GOOD, "timed_ms": []}),
    json.dumps({**GOOD, "timed_ms": ["fast", "slow"]}),
    json.dumps({k: v for k, v in GOOD.items() if k != "timed_ms"}),
    json.dumps({**GOOD, "timed_ms": [-5.5, -5.5]}),
    json.dumps({**GOOD, "timed_ms": [0.0]}),
    '{"ok": true, "init_ms": 1.0, "warmup_ms": [], "timed_ms": [Infinity]}',
    json.dumps({**GOOD, "warmup_ms": "x"}),
    json.dumps({**GOOD, "init_ms": "soon"}),
    json.dumps([1, 2]),
    json.dumps("ok"),
    json.dumps({"ok": False, "kind": 3, "message": ["x"]}),
]


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_invalid_runner_answer_is_a_parse_error_keeping_the_text(answer):
    d = ScriptedDriver(ProfileRegistry().get("local-onnx"), [answer])
    d.prepare()
    with pytest.raises(ParseError) as e:
        d.run("m.onnx")
    assert answer[:60] in str(e.value)


def test_valid_runner_answer_passes():
    d = ScriptedDriver(ProfileRegistry().get("local-onnx"), [json.dumps(GOOD)])
    d.prepare()
    assert d.run("m.onnx").timed_ms == [1.0, 2.0]


def test_negative_latency_from_runner_is_stored_as_parse_error_not_success(tmp_path, cache_dir):
    from harness.campaign import run_campaign
    from harness.models.cache import ModelCache

    profile = ProfileRegistry().get("local-onnx")
    bad = json.dumps({**GOOD, "timed_ms": [-5.5, -5.5, -5.5]})
    sp = get_space("nb201")
    with Store(tmp_path / "s.db") as st:
        s = run_campaign(st, profile, sp, [sp.parse("0")], cache=ModelCache(cache_dir),
                         driver=ScriptedDriver(profile, [bad]))
        assert s.ok == 0 and s.failures == {"parse_error": 1}
        m = st.measurements()
        assert m.status.tolist() == ["failed"] and "-5.5" in m.failure_message[0]


@pytest.mark.parametrize("value", [-5.5, 0.0, math.inf, -math.inf, math.nan])
def test_runs_table_refuses_non_positive_or_non_finite_latency(tmp_path, value):
    sp = get_space("nb201")
    with Store(tmp_path / "s.db") as st:
        cid = st.start_campaign("dev", "nb201", {}, "x", 1)
        with pytest.raises(StoreError):
            st.record_measurement(cid, "dev", sp.parse("0"), model_format="onnx", model_digest=None,
                                  started_at=utcnow(), duration_s=0.1,
                                  summary={"median_ms": 1.0}, timed_ms=[1.0, value])
        assert st.info()["measurements"] == 0


def test_old_store_with_bad_runs_migrates_them_to_failures(tmp_path):
    """A v3 store that already holds negative 'successes' upgrades; they become parse_error failures."""
    import harness.results.store as store_mod

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    upgrades = "".join(store_mod.MIGRATIONS[v] for v in range(1, 3))
    db.executescript(f"{store_mod.SCHEMA} {upgrades} INSERT INTO meta VALUES ('schema_version', '3');"
                     "INSERT INTO devices VALUES (1, 'dev', 'measured', NULL, 't');"
                     "INSERT INTO architectures VALUES (1, 'nb201', 'k', '{}');"
                     "INSERT INTO campaigns (id, device_id, space, profile_json, profile_digest, harness_version,"
                     " host, pid, planned, status, started_at) VALUES (1, 1, 'nb201', '{}', 'd', 'v', 'h', 1, 2,"
                     " 'finished', 't');"
                     "INSERT INTO measurements (id, campaign_id, device_id, arch_id, status, n_runs, median_ms,"
                     " started_at) VALUES (1, 1, 1, 1, 'ok', 1, -5.5, 't'), (2, 1, 1, 1, 'ok', 1, 2.0, 't');"
                     "INSERT INTO runs VALUES (1, 0, 0, -5.5), (2, 0, 0, 2.0);")
    db.commit()
    db.close()
    with Store(path) as st:
        m = st.measurements().set_index("id")
        assert m.loc[1, "status"] == "failed" and m.loc[1, "failure_kind"] == "parse_error"
        assert "-5.5" in m.loc[1, "failure_message"]
        assert m.loc[2, "status"] == "ok" and st.runs(2) == [2.0]
