"""Profiles: built-ins load, user files override, and malformed files give one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import yaml

from harness.devices.profile import load_profile, parse_profile
from harness.devices.registry import ProfileRegistry
from harness.errors import ProfileError, UnknownNameError

PAPER_DEVICES = {"s5e", "pixel3", "pixel4", "jetson-nano", "jetson-tx2", "raspi4"}

GOOD = """\
name: {name}
connection: {{kind: local}}
runtime: {{name: onnxruntime, threads: 1}}
"""

# (file name, content, fragments the error must contain: file, field, what is expected)
BAD = [
    ("yaml-syntax", "name: x\nruntime: [unclosed\n", ["line", "YAML syntax error"]),
    ("tab-indent", "name: tab-indent\nconnection:\n\tkind: local\n", ["YAML syntax error"]),
    ("empty", "", ["(top level)", "empty"]),
    ("a-list", "- name: a-list\n", ["(top level)", "list"]),
    ("missing-runtime", "name: missing-runtime\nconnection: {kind: local}\n",
     ["runtime", "required field is missing"]),
    ("missing-name", "connection: {kind: local}\nruntime: {name: tflite}\n", ["name", "required field is missing"]),
    ("unknown-top", GOOD.format(name="unknown-top") + "colour: blue\n",
     ["colour", "unknown field", "allowed here: name, description, hardware, connection, runtime, policy"]),
    ("unknown-runtime-field", "name: unknown-runtime-field\nconnection: {kind: local}\n"
     "runtime: {name: tflite, thread: 2}\n", ["runtime.thread", "unknown field", "threads"]),
    ("wrong-type", GOOD.format(name="wrong-type") + "policy: {timed_runs: fifty}\n",
     ["policy.timed_runs", "expected a number, not text", "fifty"]),
    ("negative", GOOD.format(name="negative") + "policy: {warmup_runs: -1}\n",
     ["policy.warmup_runs", "greater than or equal to 0"]),
    ("zero-timeout", GOOD.format(name="zero-timeout") + "policy: {timeout_seconds: 0}\n",
     ["policy.timeout_seconds", "greater than or equal to 1"]),
    ("tiny-timeout", GOOD.format(name="tiny-timeout") + "policy: {timeout_seconds: 0.01}\n",
     ["policy.timeout_seconds", "greater than or equal to 1"]),
    # every model would time out: it was accepted, and each visit failed with a message naming neither field
    ("timing-past-timeout", GOOD.format(name="timing-past-timeout") + "policy: {min_seconds: 30, timeout_seconds: 1}\n",
     ["policy.min_seconds 30", "policy.timeout_seconds 1", "every model would fail as a timeout"]),
    ("bad-kind", "name: bad-kind\nconnection: {kind: usb}\nruntime: {name: tflite}\n",
     ["connection.kind", "'usb'", "local, ssh, adb"]),
    ("no-kind", "name: no-kind\nconnection: {host: x}\nruntime: {name: tflite}\n",
     ["connection.kind", "missing", "local, ssh, adb"]),
    ("bad-runtime", "name: bad-runtime\nconnection: {kind: local}\nruntime: {name: tensorrt}\n",
     ["runtime.name", "'onnxruntime', 'tflite' or 'trtexec'", "tensorrt"]),
    ("ssh-missing-host", "name: ssh-missing-host\nconnection: {kind: ssh, user: pi}\nruntime: {name: tflite}\n",
     ["connection.host", "required field is missing"]),
    ("ssh-bad-port", "name: ssh-bad-port\nconnection: {kind: ssh, host: h, user: u, port: 70000}\n"
     "runtime: {name: tflite}\n", ["connection.port", "less than or equal to 65535"]),
    ("ssh-unknown", "name: ssh-unknown\nconnection: {kind: ssh, host: h, user: u, password: hunter2}\n"
     "runtime: {name: tflite}\n", ["connection.password", "unknown field", "key_file"]),
    ("adb-bad-taskset", "name: adb-bad-taskset\nconnection: {kind: adb, serial: 'h:5555', taskset: zz}\n"
     "runtime: {name: tflite}\n", ["connection.taskset", "pattern"]),
    ("delegate-on-onnx", "name: delegate-on-onnx\nconnection: {kind: local}\n"
     "runtime: {name: onnxruntime, delegate: gpu}\n", ["runtime", "delegate applies to tflite only"]),
    ("name-mismatch", GOOD.format(name="other-name"), ["name", "must match the file name"]),
    ("bad-name", GOOD.format(name="has space").replace("has space", "'has space'"), ["name", "pattern"]),
    ("threads-zero", "name: threads-zero\nconnection: {kind: local}\nruntime: {name: tflite, threads: 0}\n",
     ["runtime.threads", "greater than or equal to 1"]),
    ("not-mapping-policy", GOOD.format(name="not-mapping-policy") + "policy: fast\n",
     ["policy", "valid dictionary"]),
    # onnxruntime ignores config keys it does not know: the typo measured at the default level, silently
    ("ort-option-typo", "name: ort-option-typo\nconnection: {kind: local}\nruntime: {name: onnxruntime, "
     "options: {graph_optimisation_level: disable}}\n",
     ["runtime.options", "graph_optimisation_level", "did you mean 'graph_optimization_level'", "dotted"]),
    ("ort-dotted-typo", "name: ort-dotted-typo\nconnection: {kind: local}\nruntime: {name: onnxruntime, "
     "options: {session.intra_op.allow_spining: '0'}}\n",
     ["runtime.options", "did you mean 'session.intra_op.allow_spinning'", "ignores entries it does not know"]),
    ("ort-thread-option", "name: ort-thread-option\nconnection: {kind: local}\nruntime: {name: onnxruntime, "
     "options: {intra_op_num_threads: 4}}\n", ["runtime.options", "threads is a runtime field"]),
    ("tflite-options", "name: tflite-options\nconnection: {kind: local}\nruntime: {name: tflite, options: {foo: 1}}\n",
     ["runtime.options", "tflite reads no runtime.options (foo)"]),
    ("share-above-one", GOOD.format(name="share-above-one") + "policy: {max_neighbour_cpu: 3}\n",
     ["policy.max_neighbour_cpu", "less than or equal to 1"]),
]


def test_builtins_all_valid_and_include_the_papers_devices():
    good, bad = ProfileRegistry("/nonexistent").load_all()
    assert bad == []
    names = {p.name for _, p in good}
    assert {"local-onnx", "local-tflite"} | PAPER_DEVICES <= names
    # every built-in also joins a farm command (`measure -d local-onnx -d local-tflite` once refused them: their
    # files spelled out the default rounds: 3, which reads as asking for rounds); alone they keep 3 rounds
    from harness.farm.plan import farm_profile

    for _, p in good:
        assert farm_profile(p).policy.rounds == 1, p.name
    assert ProfileRegistry().get("local-onnx").policy.rounds == 3 == ProfileRegistry().get("local-tflite").policy.rounds
    # a copy made the README's way (`devices show` spells every default out, rounds: 3 included) joins too; a
    # rounds setting other than the default is still a farm refusal
    from harness.devices.profile import profile_yaml

    copy = yaml.safe_load(profile_yaml(ProfileRegistry().get("local-tflite")))
    assert copy["policy"]["rounds"] == 3
    assert farm_profile(parse_profile({**copy, "name": "tfl-copy"}, "copy")).policy.rounds == 1
    with pytest.raises(ProfileError, match="policy.rounds: 5 interleaved rounds"):
        farm_profile(parse_profile({**copy, "name": "tfl-copy", "policy": {**copy["policy"], "rounds": 5}}, "copy"))


@pytest.mark.parametrize("name,content,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_profile_names_file_field_and_expectation(tmp_path: Path, name, content, fragments):
    path = tmp_path / f"{name}.yaml"
    path.write_text(content)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in:\n{msg}"


def test_at_least_a_dozen_bad_profiles_are_covered():
    assert len(BAD) >= 12


def test_user_profile_overrides_builtin(tmp_path: Path):
    (tmp_path / "local-onnx.yaml").write_text(GOOD.format(name="local-onnx").replace("threads: 1", "threads: 2"))
    reg = ProfileRegistry(tmp_path)
    assert reg.get("local-onnx").runtime.threads == 2
    assert reg.entries()["local-onnx"].origin == "user"


def test_adding_a_device_is_adding_a_file(tmp_path: Path):
    (tmp_path / "my-box.yaml").write_text(GOOD.format(name="my-box"))
    reg = ProfileRegistry(tmp_path)
    p = reg.get("my-box")
    assert p.policy.timed_runs == 50 and p.runtime.model_format == "onnx"


def test_unknown_device_lists_valid_names(tmp_path: Path):
    with pytest.raises(UnknownNameError) as info:
        ProfileRegistry(tmp_path).get("nope")
    assert "local-onnx" in str(info.value) and "nope.yaml" in str(info.value)


def test_listing_reports_broken_files_without_hiding_good_ones(tmp_path: Path):
    (tmp_path / "broken.yaml").write_text("name: [")
    good, bad = ProfileRegistry(tmp_path).load_all()
    assert len(bad) == 1 and "broken.yaml" in str(bad[0])
    assert any(p.name == "local-onnx" for _, p in good)


def test_digest_ignores_description_but_not_threads():
    p = ProfileRegistry().get("local-onnx")
    assert p.digest() == p.model_copy(update={"description": "other"}).digest()
    changed = p.model_copy(update={"runtime": p.runtime.model_copy(update={"threads": 2})})
    assert p.digest() != changed.digest()


def test_the_readme_profile_with_every_field_parses_as_written():


    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(name: my-box.*?)```", text, re.S).group(1)
    p = parse_profile(yaml.safe_load(block), "devices/my-box.yaml")
    assert p.policy.energy == "off" and p.group == "pixel4" and p.policy.round_seed == 0
    with pytest.raises(ProfileError, match="energy: auto"):
        parse_profile(yaml.safe_load(block.replace("energy: off", "energy: on")), "devices/my-box.yaml")


@pytest.mark.parametrize("block, value, field", [
    ("runtime", {"name": "onnxruntime", "threads": True}, "runtime.threads: expected a number, not a boolean"),
    ("policy", {"warmup_runs": "yes"}, "policy.warmup_runs: expected a number, not text"),
    ("policy", {"timeout_seconds": "120"}, "policy.timeout_seconds: expected a number, not text"),
    ("policy", {"adaptive": {"max_runs": True}}, "policy.adaptive.max_runs: expected a number, not a boolean"),
])
def test_booleans_and_text_are_never_read_as_numbers(block, value, field):
    """pydantic's lax mode read `threads: yes` as 1 thread and `warmup_runs: "10"` as 10, without a word."""
    body = {"name": "x", "connection": {"kind": "local"}, "runtime": {"name": "onnxruntime"}, block: value}
    with pytest.raises(ProfileError, match=re.escape(field)):
        parse_profile(body, "x.yaml")


def test_a_profile_nested_hundreds_deep_is_an_error_not_a_recursion_traceback(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nx: " + "[" * 500 + "]" * 500 + "\n")  # 1 KB
    with pytest.raises(ProfileError, match="nested too deeply"):
        load_profile(path)


def test_onnxruntime_config_entries_known_or_new_pass_and_only_near_misses_are_refused():
    # a key onnxruntime knows, and one no release knows yet that is no misspelling of one, both pass through
    for key in ("session.intra_op.allow_spinning", "session.disable_prepacking", "session.brand_new_knob_2027"):
        p = parse_profile({"name": "o", "connection": {"kind": "local"},
                           "runtime": {"name": "onnxruntime", "options": {key: "0"}}}, "o")
        assert p.runtime.options == {key: "0"}
    with pytest.raises(ProfileError, match="did you mean 'session.disable_prepacking'"):
        parse_profile({"name": "o", "connection": {"kind": "local"},
                       "runtime": {"name": "onnxruntime", "options": {"session.disable_prepackng": "1"}}}, "o")
