"""The README's recipes hold: a driver, a space and a transfer method are each one class plus one registry
line, registered here from the test, and then work everywhere (profiles, campaign, importer, adapt, predict)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from harness.analysis import methods, workflow
from harness.analysis.methods.base import Fitted
from harness.campaign import run_campaign
from harness.devices import driver as drivers
from harness.devices.driver import make_driver
from harness.devices.registry import ProfileRegistry
from harness.devices.local import LocalDriver
from harness.devices.profile import Connection, parse_profile
from harness.errors import ProfileError, SpaceError, UnknownNameError
from harness.models import spaces
from harness.models.cache import ModelCache
from harness.models.graph import Graph
from harness.models.spaces import Arch, SearchSpace
from harness.results.importer import detect_space, import_table
from harness.results.store import Store
from harness.testing.conformance import DriverConformance
from tests.conftest import FAST_POLICY, write_profile


# --- a driver: its connection model and its class, then one register line ---------------------------
class NicedConnection(Connection):
    """This machine, measured by a worker at a given niceness (a toy, but a complete driver)."""

    kind: Literal["niced"]
    niceness: int = Field(0, ge=0, le=19)


class NicedDriver(LocalDriver):
    kind = "niced"

    def prepare(self):
        return {**super().prepare(), "niceness": self.profile.connection.niceness}


@pytest.fixture
def niced(monkeypatch):
    monkeypatch.setitem(drivers.DRIVERS, "niced", (NicedDriver, NicedConnection))  # = register_driver(...)
    return parse_profile({"name": "niced-box", "connection": {"kind": "niced", "niceness": 5},
                          "runtime": {"name": "onnxruntime", "threads": 1}, "policy": FAST_POLICY}, "test")


def test_toy_driver_profile_validates_with_its_own_connection_model(niced):
    assert isinstance(niced.connection, NicedConnection) and niced.connection.niceness == 5
    assert isinstance(make_driver(niced), NicedDriver)
    with pytest.raises(ProfileError, match=r"connection.niceness: unknown|connection.niceness"):
        parse_profile({"name": "x", "connection": {"kind": "niced", "niceness": 99},
                       "runtime": {"name": "onnxruntime"}}, "test")
    with pytest.raises(ProfileError, match="connection.nicenes: unknown field.*did you mean 'niceness'"):
        parse_profile({"name": "x", "connection": {"kind": "niced", "nicenes": 1},
                       "runtime": {"name": "onnxruntime"}}, "test")


def test_register_driver_is_the_one_line(monkeypatch):
    monkeypatch.setattr(drivers, "DRIVERS", dict(drivers.DRIVERS))
    drivers.register_driver("niced", NicedDriver, NicedConnection)
    assert drivers.driver_class("niced") is NicedDriver and drivers.connection_model("niced") is NicedConnection


class TestNicedConformance(DriverConformance):
    """The registered toy driver passes the suite every driver must pass."""

    @pytest.fixture
    def base_profile(self, niced):
        return niced

    @pytest.fixture
    def make_driver(self):
        return make_driver


# --- a space: one class, then one line in SPACES ----------------------------------------------------
WIDTHS = (8, 16, 32, 64)


class ToySpace(SearchSpace):
    name = "toy"
    description = "one 3x3 conv of width 8/16/32/64 and a classifier"
    key_columns = ("toy_width",)
    default_input_shape = (32, 32, 3)
    default_num_classes = 10

    def size(self) -> int:
        return len(WIDTHS)

    def parse(self, token: str) -> Arch:
        w = int(token)
        if w not in WIDTHS:
            raise SpaceError(f"toy width must be one of {WIDTHS}, got {token!r}")
        return Arch(self.name, str(w), {"toy_width": w})

    def all(self):
        return iter([self.parse(str(w)) for w in WIDTHS])

    def sample(self, n: int, seed: int) -> list[Arch]:
        return self.sample_distinct(n, seed, lambda rng: self.parse(str(rng.choice(WIDTHS))))

    def encode(self, arch: Arch) -> np.ndarray:
        return np.array([arch.columns["toy_width"] == w for w in WIDTHS], dtype=np.float32)

    def build(self, arch: Arch, input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> Graph:
        g = Graph(f"toy-{arch.key}", input_shape or self.default_input_shape)
        x = g.relu(g.conv("input", arch.columns["toy_width"], 3))
        g.dense(g.global_avgpool(x), num_classes or self.default_num_classes)
        return g


@pytest.fixture
def toy_space(monkeypatch):
    monkeypatch.setitem(spaces.SPACES, ToySpace.name, ToySpace)
    return spaces.get_space("toy")


def test_toy_space_is_measured_and_imported(toy_space, registry, store_path, cache_dir, tmp_path):
    archs = toy_space.sample(2, 0)
    with Store(store_path) as st:
        summary = run_campaign(st, registry.get("fast-onnx"), toy_space, archs, cache=ModelCache(cache_dir))
        assert summary.ok == 2
    table = tmp_path / "toy.csv"
    pd.DataFrame({"toy_width": [8, 16, 32], "pub_ms": [1.0, 2.0, 4.0]}).to_csv(table, index=False)
    assert detect_space(["toy_width", "pub_ms"], table) == "toy"  # the importer's signature comes from key_columns
    with Store(store_path) as st:
        report = import_table(st, table)
        assert report.space == "toy" and report.devices == {"pub": 3}


def test_a_space_smaller_than_a_sample_is_an_error_and_its_reference_model_is_found(toy_space, devices_dir,
                                                                                    store_path, cache_dir):
    """A 4-architecture plug-in space hung for ever: the paired reference model was picked from a sample of 31,
    and sample_distinct drew without end for more than the space holds."""
    with pytest.raises(SpaceError, match="between 1 and 4 for toy, got 5"):
        toy_space.sample(5, 0)
    write_profile(devices_dir, "ref-onnx", {"name": "onnxruntime", "threads": 1}, {"reference": "auto"})
    with Store(store_path) as st:
        summary = run_campaign(st, ProfileRegistry(devices_dir).get("ref-onnx"), toy_space, toy_space.sample(4, 0),
                               cache=ModelCache(cache_dir))
        assert summary.ok == 4


# --- a transfer method: one class, then one line in METHODS -------------------------------------------
class ScaledProxy:
    """The proxy's latency times the median target/proxy ratio on the samples."""

    name = "scaled-proxy"
    summary = "one proxy, rescaled"
    max_sources = 1

    def fit(self, ctx, sources, archs, y_ms) -> Fitted:
        s_ms, _ = workflow.source_latencies(ctx, sources, archs)
        return Fitted({"proxy": sources[0], "ratio": float(np.median(y_ms / s_ms[:, 0]))})

    def predict(self, ctx, payload, archs):
        s_ms, _ = workflow.source_latencies(ctx, [payload["proxy"]], archs)
        return payload["ratio"] * s_ms[:, 0]


def test_toy_method_adapts_predicts_and_validates(monkeypatch, store_path, tmp_path):
    monkeypatch.setitem(methods.METHODS, "scaled-proxy", ScaledProxy)  # = methods.register(...)
    sp = spaces.get_space("nb201")
    archs = sp.sample(30, 0)
    proxy = np.linspace(1.0, 3.0, len(archs))
    table = pd.DataFrame({"arch_str": [a.key for a in archs], "pub_ms": proxy, "acc_top1": 50 + 10 * proxy})
    table.to_csv(tmp_path / "pub.csv", index=False)
    table.iloc[:5][["arch_str"]].assign(new_ms=3 * proxy[:5]).to_csv(tmp_path / "new.csv", index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "pub.csv")
        import_table(st, tmp_path / "new.csv")
        ctx = workflow.open_context(st, "nb201")
        r = workflow.adapt(ctx, ["pub"], "new", method="scaled-proxy")
        assert r.method == "scaled-proxy" and r.n_target_samples == 5
        pred = workflow.predict(ctx, "new", archs)
        assert np.allclose(pred.predicted_ms, 3 * proxy)
        check = workflow.pareto(ctx, "pub", "new", "acc_top1", what_if_k=3, what_if_method="scaled-proxy")
        assert check.predicted_from.startswith("scaled-proxy")
    with pytest.raises(UnknownNameError, match="scaled-proxy"):  # the registry lists it among the valid ones
        methods.get_method("scaled-prox")


# --- the same driver from outside the package: a plug-in file named by $HARNESS_PLUGINS -------------
PLUGIN = '''
from typing import Literal

from pydantic import Field

from harness.devices.driver import register_driver
from harness.devices.local import LocalDriver
from harness.devices.profile import Connection


class PluggedConnection(Connection):
    kind: Literal["plugged"]
    niceness: int = Field(0, ge=0, le=19)


class PluggedDriver(LocalDriver):
    kind = "plugged"

    def prepare(self):
        return {**super().prepare(), "niceness": self.profile.connection.niceness}


register_driver("plugged", PluggedDriver, PluggedConnection)
'''


def test_a_plugin_file_adds_a_driver_to_the_cli_without_editing_harness(cli_env, tmp_path):
    from tests.conftest import harness, write_profile

    (tmp_path / "lab_driver.py").write_text(PLUGIN)
    write_profile(Path(cli_env["HARNESS_DEVICES"]), "plugged-box", {"name": "onnxruntime", "threads": 1},
                  connection={"kind": "plugged", "niceness": 3})
    without = harness("devices", "check", "plugged-box", env=cli_env, check=False, subprocess_=True)
    assert without.returncode != 0 and "'plugged' is not a connection kind" in without.stderr
    env = {**cli_env, "HARNESS_PLUGINS": str(tmp_path / "lab_driver.py")}
    out = harness("measure", "-d", "plugged-box", "--arch", "0", env=env, subprocess_=True)
    assert "1 measured, 0 failed" in out.stdout
    with Store(cli_env["HARNESS_STORE"]) as st:
        cid = int(st.measurements("plugged-box").campaign_id.iloc[0])
        cond = st.db.execute("SELECT conditions_json FROM campaigns WHERE id = ?", (cid,)).fetchone()[0]
    assert '"niceness": 3' in cond
    # an installed package declares it as an entry point instead (here a bare dist-info on PYTHONPATH)
    info = tmp_path / "site" / "lab_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.plugins]\nlab = lab_driver_pkg\n")
    (tmp_path / "site" / "lab_driver_pkg.py").write_text(PLUGIN)
    installed = harness("devices", "check", "plugged-box", env={**cli_env, "PYTHONPATH": str(tmp_path / "site")},
                        subprocess_=True)
    assert "plugged-box: ok" in installed.stdout
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    bad = harness("devices", "check", "plugged-box", env={**cli_env, "HARNESS_PLUGINS": str(tmp_path / "broken.py")},
                  check=False, subprocess_=True)
    flat = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and "broken.py could not be imported: ModuleNotFoundError" in flat, flat
    assert "Traceback" not in bad.stderr


# --- plug-in mistakes are named where they are made ---------------------------------------------------
def test_plugin_mistakes_are_typed_errors_that_name_the_plugin(monkeypatch):
    """An abstract space, a method without predict, a taken name or a driver path that does not import were
    tracebacks (or silent replacements: a plug-in turned nb201 into another space) before."""
    from harness.plugins import PluginError

    class Half(SearchSpace):
        name = "half"

    with pytest.raises(PluginError, match="'half' .*does not implement .*encode"):
        spaces.register_space(Half)

    class Other(ToySpace):
        name = "nb201"

    with pytest.raises(PluginError, match="search space 'nb201' is already registered.*replace=True"):
        spaces.register_space(Other)
    monkeypatch.setitem(spaces.SPACES, "toy", ToySpace)  # undone after the test: toy stays out of the registry
    spaces.register_space(ToySpace)  # the same class again is not a clash

    class NoPredict:
        name, summary, max_sources = "nopredict", "x", None

        def fit(self, *a):
            raise ZeroDivisionError("oops")

    with pytest.raises(PluginError, match="'nopredict' .*has no predict"):
        methods.register("nopredict", NoPredict)
    with pytest.raises(PluginError, match="transfer method 'multiproxy' is already registered"):
        methods.register("multiproxy", ScaledProxy)
    NoPredict.predict = lambda self, *a: None
    monkeypatch.setitem(methods.METHODS, "crashy", NoPredict)
    with pytest.raises(PluginError, match="'crashy' \\(a plug-in\\) failed in fit: ZeroDivisionError: oops"):
        methods.get_method("crashy").fit(None, [], [], np.ones(3))
    NoPredict.fit = lambda self, *a: np.linalg.inv(np.zeros((2, 2)))  # LinAlgError: a ValueError
    with pytest.raises(ValueError) as e:  # leave-one-out refits read a ValueError as "too few samples to say"
        methods.get_method("crashy").fit(None, [], [], np.ones(3))
    assert isinstance(e.value, PluginError) and "Singular matrix" in str(e.value)

    from harness.devices.profile import LocalConnection

    with pytest.raises(PluginError, match="declares kind 'local'; give it its own subclass"):
        drivers.register_driver("weirdbox", LocalDriver, LocalConnection)  # profiles would read "should be 'local'"
    monkeypatch.setitem(drivers.DRIVERS, "weirdbox", ("nosuchmod:Driver", "harness.devices.profile:LocalConnection"))
    with pytest.raises(PluginError, match="driver of connection kind 'weirdbox' .*'nosuchmod:Driver'.*ModuleNotFound"):
        drivers.driver_class("weirdbox")
    # a driver class that is none, or lacks run/cleanup: an AttributeError or "Can't instantiate" at first use before
    with pytest.raises(PluginError, match="NoDriver is no harness.devices.driver.Driver subclass"):
        drivers.register_driver("niced", type("NoDriver", (), {}), NicedConnection)
    with pytest.raises(PluginError, match="HalfDriver does not implement .*run"):
        drivers.register_driver("niced", type("HalfDriver", (drivers.Driver,), {"kind": "niced"}), NicedConnection)



TINY_SPACE = '''
import numpy as np

from harness.models.graph import Graph
from harness.models.spaces import Arch, SearchSpace, register_space


class Tiny(SearchSpace):
    name = "tiny"
    key_columns = ("tiny_width",)

    def size(self):
        return 3

    def parse(self, token):
        return Arch(self.name, str(int(token)), {"tiny_width": int(token)})

    def sample(self, n, seed):
        return self.sample_distinct(n, seed, lambda rng: self.parse(str(rng.choice([8, 16, 32]))))

    def encode(self, arch):
        return np.array([arch.columns["tiny_width"] == w for w in (8, 16, 32)], dtype=np.float32)

    def build(self, arch, input_shape=None, num_classes=None):
        g = Graph("tiny", input_shape or self.default_input_shape)
        g.dense(g.global_avgpool(g.conv("input", arch.columns["tiny_width"], 3)), 10)
        return g


register_space(Tiny)
'''


def test_a_plugin_space_table_is_imported_like_a_builtin_one(cli_env, tmp_path):
    """`harness import` recognised only the built-in spaces' key columns: a plug-in space's tables could not be
    imported at all ("no recognisable architecture key column", and with --space "does not have yet")."""
    from tests.conftest import harness

    (tmp_path / "tiny_space.py").write_text(TINY_SPACE)
    pd.DataFrame({"tiny_width": [8, 16, 32], "pub_ms": [1.0, 2.0, 4.0]}).to_csv(tmp_path / "tiny.csv", index=False)
    env = {**cli_env, "HARNESS_PLUGINS": str(tmp_path / "tiny_space.py")}
    out = harness("import", str(tmp_path / "tiny.csv"), env=env, subprocess_=True)
    assert "tiny" in out.stdout and "3" in out.stdout
    with Store(cli_env["HARNESS_STORE"]) as st:
        assert len(st.db.execute("SELECT 1 FROM architectures WHERE space = 'tiny'").fetchall()) == 3
    listed = harness("spaces", env={**env, "COLUMNS": "200"}, subprocess_=True)  # no description, no input shape:
    assert "tiny" in listed.stdout and "Traceback" not in listed.stderr          # an AttributeError before


class _Answers(LocalDriver):
    """A plug-in driver whose run() returns what a buggy one might."""

    kind = "niced"
    answer = None

    def push(self, artifact):
        return str(artifact.path)

    def run(self, model_ref):
        return type(self).answer


@pytest.mark.parametrize("answer, said", [
    (lambda: drivers.RunResult([float("nan"), 1.0]), "timed runs that are not all finite"),  # AttributeError
    (lambda: drivers.RunResult(["fast", "slow"]), "timed runs that are not all finite"),     # TypeError
    (lambda: drivers.RunResult([-1.0, 2.0]), "timed runs that are not all finite"),          # "a bug: report it"
    (lambda: drivers.RunResult([1.0, 2.0], warmup_ms=[float("nan")]), "warmup_ms"),
    (lambda: {"timed_ms": [1.0]}, "a dict instead of a RunResult"),                         # AttributeError
    (lambda: drivers.RunResult([1.0, 2.0], init_ms=-50.0), "init_ms -50.0"),                # stored before
    (lambda: drivers.RunResult([1.0, 2.0], n_runs=1000), "n_runs 1000 beside 2 timed run"),  # stored before
    (lambda: drivers.RunResult([1.0, 2.0], energy_mj=float("nan")), "energy_mj nan"),       # "median nan mJ"
])
def test_a_plugin_drivers_nonsense_is_a_typed_failure_never_stored(niced, store_path, cache_dir, answer, said):
    _Answers.answer = answer()
    sp = spaces.get_space("nb201")
    with Store(store_path) as st:
        s = run_campaign(st, niced, sp, sp.parse_many(["1"]), cache=ModelCache(cache_dir),
                         driver=_Answers(niced))
        m = st.measurements("niced-box")
    assert s.ok == 0 and s.failed >= 1 and (m.status == "failed").all()
    assert (m.failure_kind == "device_error").all() and said in m.failure_message.iloc[0]


METHOD_PLUGIN = '''
import numpy as np

from harness.analysis import workflow
from harness.analysis.methods.base import Fitted


class Ratio:
    name = "ratio"
    summary = "one proxy, rescaled"
    max_sources = 1

    def fit(self, ctx, sources, archs, y_ms):
        s_ms, _ = workflow.source_latencies(ctx, sources, archs)
        return Fitted({"proxy": sources[0], "ratio": float(np.median(y_ms / s_ms[:, 0]))})

    def predict(self, ctx, payload, archs):
        s_ms, _ = workflow.source_latencies(ctx, [payload["proxy"]], archs)
        return payload["ratio"] * s_ms[:, 0]
'''


def test_a_predictor_of_an_edited_method_is_refitted_not_reused(monkeypatch, store_path, tmp_path):
    """Editing a plug-in's fit left adapt saying 'already fits these inputs: reused', never calling the new code."""
    import importlib.util
    import sys

    path = tmp_path / "ratio_method.py"
    path.write_text(METHOD_PLUGIN)
    spec = importlib.util.spec_from_file_location("ratio_method", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ratio_method", mod)  # as harness.plugins loads a plug-in file
    spec.loader.exec_module(mod)
    monkeypatch.setitem(methods.METHODS, "ratio", mod.Ratio)
    sp = spaces.get_space("nb201")
    archs = sp.sample(30, 0)
    proxy = np.linspace(1.0, 3.0, len(archs))
    pd.DataFrame({"arch_str": [a.key for a in archs], "pub_ms": proxy}).to_csv(tmp_path / "pub.csv", index=False)
    pd.DataFrame({"arch_str": [a.key for a in archs[:5]], "new_ms": 3 * proxy[:5]}).to_csv(tmp_path / "new.csv",
                                                                                           index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "pub.csv")
        import_table(st, tmp_path / "new.csv")
        ctx = workflow.open_context(st, "nb201")
        first = workflow.adapt(ctx, ["pub"], "new", method="ratio")
        assert workflow.adapt(ctx, ["pub"], "new", method="ratio").reused  # the same code: reused
        path.write_text(METHOD_PLUGIN + "\n# fixed a bug\n")
        again = workflow.adapt(ctx, ["pub"], "new", method="ratio")
        assert not again.reused and again.id != first.id and "the code of ratio changed" in again.why_new


@pytest.mark.parametrize("fit, predict, said", [
    ("Fitted({'r': 1.0})", "np.full(len(archs), np.nan)", "predicts values that are not finite"),
    ("{'r': 1.0}", "np.ones(len(archs))", "fit returned a dict, not a Fitted"),
    ("Fitted({'r': 1.0})", "np.ones(len(archs) + 1)", "predict returned 6 values for 5 architectures"),
    ("Fitted({'r': 1.0})", "['fast'] * len(archs)", "values that are not numbers"),
])
def test_a_plugin_methods_nonsense_is_refused_before_anything_is_saved(monkeypatch, store_path, tmp_path, fit,
                                                                      predict, said):
    """A predictor of NaN predictions was saved ('SRCC nan'); a dict from fit and a wrong length were tracebacks."""
    from harness.errors import HarnessError

    namespace = {"np": np, "Fitted": Fitted}
    exec(f"class Broken:\n    name = 'broken'\n    summary = 'x'\n    max_sources = None\n"
         f"    def fit(self, ctx, sources, archs, y_ms):\n        return {fit}\n"
         f"    def predict(self, ctx, payload, archs):\n        return {predict}\n", namespace)
    monkeypatch.setitem(methods.METHODS, "broken", namespace["Broken"])
    sp = spaces.get_space("nb201")
    archs = sp.sample(30, 0)
    proxy = np.linspace(1.0, 3.0, len(archs))
    pd.DataFrame({"arch_str": [a.key for a in archs], "pub_ms": proxy}).to_csv(tmp_path / "pub.csv", index=False)
    pd.DataFrame({"arch_str": [a.key for a in archs[:5]], "new_ms": 3 * proxy[:5]}).to_csv(tmp_path / "new.csv",
                                                                                           index=False)
    with Store(store_path) as st:
        import_table(st, tmp_path / "pub.csv")
        import_table(st, tmp_path / "new.csv")
        with pytest.raises(HarnessError, match=said):
            workflow.adapt(workflow.open_context(st, "nb201"), ["pub"], "new", method="broken")
        assert st.latest_predictor("nb201", "new") is None


@pytest.mark.parametrize("where, behaviour, said", [
    ("check", "raise KeyError('port')", "the niced driver's check raised KeyError"),
    ("check", "return None", "the niced driver's check returned a NoneType, not a CheckReport"),
    ("check", "raise OSError('cannot open /dev/fake')", "niced-box: the niced driver's check raised OSError"),
    ("prepare", "raise KeyError('port')", "the niced driver's prepare raised KeyError"),
    ("prepare", "return None", "the niced driver's prepare returned a NoneType, not a dict"),
])
def test_a_plugin_drivers_check_or_prepare_bug_names_the_driver(niced, cli_env, devices_dir, tmp_path, monkeypatch,
                                                                  where, behaviour, said):
    """A KeyError or None from a plug-in's check/prepare was a traceback; an OSError named no device."""
    import yaml

    from tests.conftest import harness

    namespace = {}
    exec(f"def broken(self):\n    {behaviour}\n", namespace)
    monkeypatch.setattr(NicedDriver, where, namespace["broken"])
    (devices_dir / "niced-box.yaml").write_text(yaml.safe_dump(niced.as_dict()))
    args = ("devices", "check", "niced-box") if where == "check" else \
        ("measure", "-d", "niced-box", "--space", "nb201", "--arch", "1")
    r = harness(*args, env=cli_env, check=False)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode in (1, 2) and said in out and "Traceback" not in out, out[-500:]


def test_the_conformance_suite_catches_a_driver_that_reports_seconds(niced, tmp_path):
    """A driver passing perf_counter deltas (seconds) passed all 15 checks and stored NB201 models at 0.002 ms."""
    from harness.models.cache import ModelCache
    from harness.testing.conformance import SMALL_ARCH, DriverConformance

    class InSeconds(NicedDriver):
        def run(self, model_ref):
            r = super().run(model_ref)
            r.timed_ms = [t / 1000 for t in r.timed_ms]
            return r

    sp = spaces.get_space("nb201")
    artifact = ModelCache(tmp_path).get(sp.build(sp.parse(SMALL_ARCH)), "onnx")
    suite = DriverConformance()
    suite.test_min_seconds_extends_the_timed_runs(NicedDriver, niced, artifact)  # the real one passes
    with pytest.raises(AssertionError, match="are they in ms"):
        suite.test_min_seconds_extends_the_timed_runs(InSeconds, niced, artifact)
