"""Owners' existing adapters are valued without retraining.

Adapters here are built with PEFT itself (the spec's ``LoraConfig`` on the embedded base, LoRA
weights filled with seeded random values, ``save_pretrained``): reading, checking and the
ClientApp/coordinator plumbing do not depend on the weights having been trained.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from common.model.adapter_files import (
    AdapterFile,
    check_adapter_compatible,
    check_adapter_dirs,
    expected_shapes_for,
    read_adapter_dir,
)
from common.model.lora import adapter_tensors, expected_adapter_shapes, lora_config
from server.cli.main import main


def build_adapter(directory: Path, base_dir, spec, *, seed: int = 0, adapter_name: str = "default",
                  scale: float = 0.02, safe: bool = True) -> dict[str, np.ndarray]:
    """A PEFT adapter directory for ``spec`` on ``base_dir`` with seeded random LoRA weights; its tensors."""
    from peft import get_peft_model

    from common.model.base import load_base_model

    model, _ = load_base_model(base_dir)
    peft_model = get_peft_model(model, lora_config(spec, model), adapter_name=adapter_name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(str(directory), safe_serialization=safe)
    return adapter_tensors(peft_model, adapter_name)


@pytest.fixture(scope="module")
def good(tmp_path_factory, base_model_dir, fast_spec):
    directory = tmp_path_factory.mktemp("adapters") / "good"
    return directory, build_adapter(directory, base_model_dir, fast_spec)


@pytest.fixture(scope="module")
def expected(base_model_dir, fast_spec):
    from common.model.base import load_base_model

    return expected_adapter_shapes(fast_spec, load_base_model(base_model_dir)[0])


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    """A second tiny GPT-2 of another width (32, the embedded one is 128)."""
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    return build_zoo_model(tmp_path_factory.mktemp("zoo") / "gpt2-32", ZooModelConfig(architecture="gpt2",
                                                                                       hidden_size=32))


@pytest.fixture(scope="module")
def wrong_base_adapter(tmp_path_factory, other_base, fast_spec):
    directory = tmp_path_factory.mktemp("adapters") / "other-base"
    build_adapter(directory, other_base, dataclasses.replace(fast_spec, base_model=str(other_base)))
    return directory


def _check(adapter: AdapterFile, spec, expected, base) -> str:
    with pytest.raises(ConfigError) as info:
        check_adapter_compatible(adapter, spec, expected, str(base))
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- reading


def test_read_adapter_dir_round_trips_peft_tensors(good, expected, fast_spec, base_model_dir):
    directory, tensors = good
    adapter = read_adapter_dir(directory)
    assert adapter.path == str(directory.resolve())
    assert adapter.config["peft_type"] == "LORA" and adapter.rank == fast_spec.lora_r
    assert sorted(adapter.tensors) == sorted(tensors) == sorted(expected)
    for key, value in tensors.items():
        assert adapter.tensors[key].dtype == np.float32
        np.testing.assert_array_equal(adapter.tensors[key], value)
    check_adapter_compatible(adapter, fast_spec, expected, str(base_model_dir))  # no error


def test_meta_probe_shapes_equal_the_loaded_models(expected, fast_spec):
    assert expected_shapes_for(fast_spec) == expected


def test_nested_layout_and_bin_weights(tmp_path, base_model_dir, fast_spec, expected):
    tensors = build_adapter(tmp_path / "nested", base_model_dir, fast_spec, adapter_name="acme", seed=3)
    assert (tmp_path / "nested" / "acme" / "adapter_config.json").is_file()  # PEFT's layout
    nested = read_adapter_dir(tmp_path / "nested", "acme")
    assert nested.path == str((tmp_path / "nested" / "acme").resolve())
    assert all(np.array_equal(nested.tensors[k], v) for k, v in tensors.items())
    assert read_adapter_dir(tmp_path / "nested").path == nested.path  # the only nested one

    pickled = build_adapter(tmp_path / "bin", base_model_dir, fast_spec, safe=False, seed=4)
    assert (tmp_path / "bin" / "adapter_model.bin").is_file()
    adapter = read_adapter_dir(tmp_path / "bin")
    assert all(np.array_equal(adapter.tensors[k], v) for k, v in pickled.items())
    check_adapter_compatible(adapter, fast_spec, expected, str(base_model_dir))


def test_unreadable_directories_are_one_line(tmp_path, good):
    cases = {}
    cases["missing"] = (tmp_path / "nope", "no such directory")
    (tmp_path / "empty").mkdir()
    cases["empty"] = (tmp_path / "empty", "no adapter_config.json")
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    cases["not_lora"] = (prefix, "not LoRA")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((good[0] / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    cases["weights"] = (broken, "cannot read adapter_model.safetensors")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "adapter_config.json").write_text((good[0] / "adapter_config.json").read_text())
    cases["no_weights"] = (noweights, "no adapter weights")
    for name, (path, needle) in cases.items():
        with pytest.raises(ConfigError) as info:
            read_adapter_dir(path)
        assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value), name


# --------------------------------------------------------------------------- compatibility


@pytest.mark.parametrize("setting, needle", [
    ({"lora_r": 16}, "LoRA rank 16 but the job's spec has `lora_r` 8; value it with `lora_r` 16"),
    ({"lora_alpha": 32}, "LoRA alpha 32 but the job's spec has `lora_alpha` 16; value it with `lora_alpha` 32"),
    ({"target_modules": "c_attn,c_proj"}, "LoRA target modules c_attn,c_proj but the job's spec targets c_attn"),
])
def test_another_lora_setup_is_named(tmp_path, base_model_dir, fast_spec, expected, setting, needle):
    build_adapter(tmp_path / "a", base_model_dir, dataclasses.replace(fast_spec, **setting))
    assert needle in _check(read_adapter_dir(tmp_path / "a"), fast_spec, expected, base_model_dir)


def test_an_adapter_for_another_base_is_named(wrong_base_adapter, other_base, fast_spec, expected, base_model_dir):
    message = _check(read_adapter_dir(wrong_base_adapter), fast_spec, expected, base_model_dir)
    assert "has shape (8, 32), the base model" in message and "expects (8, 128)" in message
    assert "trained for another base model?" in message and str(other_base) in message


def test_base_named_in_the_config(tmp_path, good, fast_spec, expected, base_model_dir):
    adapter = read_adapter_dir(good[0])
    hub = dataclasses.replace(adapter, config={**adapter.config, "base_model_name_or_path": f"org/{base_model_dir.name}"})
    check_adapter_compatible(hub, fast_spec, expected, str(base_model_dir))  # same name elsewhere: fine
    other = dataclasses.replace(adapter, config={**adapter.config, "base_model_name_or_path": "org/instruct-model"})
    message = _check(other, fast_spec, expected, base_model_dir)
    assert "org/instruct-model" in message and str(base_model_dir) in message
    import shutil

    copy = shutil.copytree(base_model_dir, tmp_path / "copy-of-base")  # a copy of π₀ at another path: fine
    check_adapter_compatible(dataclasses.replace(adapter, config={**adapter.config,
                                                                  "base_model_name_or_path": str(copy)}),
                             fast_spec, expected, str(base_model_dir))


def test_check_adapter_dirs_without_a_spec_uses_each_adapters_own_setup(tmp_path, base_model_dir, fast_spec,
                                                                       wrong_base_adapter):
    build_adapter(tmp_path / "r16", base_model_dir, dataclasses.replace(fast_spec, lora_r=16))
    checked = check_adapter_dirs({"a": str(tmp_path / "r16")}, str(base_model_dir))  # generate: own rank ok
    assert checked["a"].rank == 16
    with pytest.raises(ConfigError, match="another base model"):
        check_adapter_dirs({"b": str(wrong_base_adapter)}, str(base_model_dir))


# --------------------------------------------------------------------------- coordinator


def _random_tensors(expected, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in expected.items()}


def test_rejection_reason_accepts_an_adapter_without_examples(expected, fast_spec):
    from server.valuation.pipeline import Submission, rejection_reason, submission_from_meta

    tensors = _random_tensors(expected)
    adapter = Submission("a", tensors=tensors, num_examples=0, source="adapter")
    assert rejection_reason(adapter, expected, fast_spec.lora_r) is None
    trained = Submission("t", tensors=tensors, num_examples=0)
    assert rejection_reason(trained, expected, fast_spec.lora_r) == "owner reported no training examples"
    assert "size composition" in rejection_reason(adapter, expected, fast_spec.lora_r, composition="size")
    nan = {**tensors}
    key = next(iter(nan))
    nan[key] = nan[key].copy()
    nan[key][0, 0] = np.nan
    assert "non-finite" in rejection_reason(Submission("a", tensors=nan, source="adapter"), expected, fast_spec.lora_r)
    from common.wire.messages import ReplyMeta

    assert submission_from_meta(ReplyMeta.from_record({"owner": "a", "source": "adapter"}), tensors, {}).source == "adapter"
    assert submission_from_meta(ReplyMeta.from_record({"owner": "a"}), tensors, {}).source == "trained"


def test_admission_keeps_the_source_through_a_resume(tmp_path, expected, fast_spec):
    from common.config.job import OwnerEntry, ValuationJob
    from common.trust.sealing import generate_storage_key
    from server.federation.admission import Admission
    from server.federation.ledger import Ledger
    from server.valuation.pipeline import Submission

    generate_storage_key(tmp_path / "storage.key")
    job = ValuationJob(run_id="r", owners=(OwnerEntry("a", adapter="/x"),), eval_path="-", out_dir=str(tmp_path),
                       spec=fast_spec, simulated=False, storage_key=str(tmp_path / "storage.key"), composition="sum")
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r", job.to_json())
        assert Admission(job, ledger, expected).admit(
            Submission("a", tensors=_random_tensors(expected), source="adapter"), None) is None
        assert Admission(job, ledger, expected).stored()["a"].source == "adapter"


def test_job_rules_for_adapter_owners(fast_spec):
    from common.config.job import OwnerEntry, ValuationJob

    def job(*owners, composition="sum"):
        return ValuationJob(run_id="r", owners=owners, eval_path="-", out_dir="-", spec=fast_spec,
                            composition=composition)

    assert job(OwnerEntry("a", adapter="/x")).owners[0].source == "adapter"
    with pytest.raises(ConfigError, match="not both"):
        job(OwnerEntry("a", data="/d", adapter="/x"))
    with pytest.raises(ConfigError, match="give `adapter_examples` for a "):
        job(OwnerEntry("a", adapter="/x"), composition="size")
    job(OwnerEntry("a", adapter="/x", adapter_examples=10), composition="size")
    restored = ValuationJob.from_json(job(OwnerEntry("a", adapter="/x", adapter_examples=3)).to_json())
    assert restored.owners[0].adapter == "/x" and restored.owners[0].adapter_examples == 3


# --------------------------------------------------------------------------- the ClientApp


def _job(tmp_path, spec, owners, simulated=False):
    from common.config.job import ValuationJob

    return ValuationJob(run_id="run-a", owners=tuple(owners), eval_path="-", out_dir=str(tmp_path / "out"),
                        spec=spec, simulated=simulated, composition="sum")  # sum: an adapter may lack its count


def _ask(job, node_configs, node_id=1):
    from server.federation.collect import decode_reply, training_message
    from tests.local_federation import LocalGrid

    grid = LocalGrid(node_configs)
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    message = training_message(job, node_id, "nonce-1", [])
    [reply] = grid.pull_messages(grid.push_messages([message]))
    return reply, decode_reply(reply)


def test_client_app_values_an_existing_adapter_without_training(tmp_path, good, fast_spec):
    from common.config.job import OwnerEntry
    from common.trust.signing import (
        SubmissionClaim,
        generate_private_key,
        load_private_key,
        public_key_text,
        save_keypair,
        verify_claim,
    )

    directory, tensors = good
    key, _pub = save_keypair(generate_private_key(), tmp_path / "keys", "acme")
    public = load_private_key(key).public_key()
    job = _job(tmp_path, fast_spec, [OwnerEntry("acme", public_key=public_key_text(public))])
    reply, sub = _ask(job, [{"owner-name": "acme", "adapter-path": str(directory), "adapter-examples": 12,
                             "signing-key": str(key)}])
    meta = dict(reply.content["meta"])
    assert "error" not in meta, meta.get("error")
    assert meta["source"] == "adapter" and sub.source == "adapter" and sub.num_examples == 12
    assert dict(reply.content["metrics"])["from_adapter"] == 1.0
    assert sorted(sub.tensors) == sorted(tensors)
    assert all(np.array_equal(sub.tensors[k], v) for k, v in tensors.items())
    claim = SubmissionClaim("run-a", "nonce-1", "acme", sub.digest, 12, fast_spec.digest())
    assert sub.claimed_sha256 == sub.digest and verify_claim(public, claim, sub.signature)


def test_simulated_roster_carries_adapters_and_checks_them(tmp_path, good, fast_spec):
    from common.config.job import OwnerEntry

    job = _job(tmp_path, fast_spec, [OwnerEntry("acme", adapter=str(good[0]), adapter_examples=5)], simulated=True)
    _reply, sub = _ask(job, [{"partition-id": 0}])
    assert sub.error is None and sub.source == "adapter" and sub.num_examples == 5
    wrong = dataclasses.replace(fast_spec, lora_alpha=8)
    _reply, sub = _ask(_job(tmp_path, wrong, job.owners, simulated=True), [{"partition-id": 0}])
    assert "LoRA alpha 16 but the job's spec has `lora_alpha` 8" in sub.error
    other = dataclasses.replace(fast_spec, base_fingerprint="0" * 64)
    _reply, sub = _ask(_job(tmp_path, other, job.owners, simulated=True), [{"partition-id": 0}])
    assert "fingerprint" in sub.error


def test_node_config_names_data_or_adapter(good):
    from client.owner import resolve_identity
    from common.errors import FairPoolError

    identity = resolve_identity({"owner-name": "a", "adapter-path": str(good[0]), "adapter-examples": "7"}, None)
    assert identity.source == "adapter" and identity.adapter_examples == 7 and identity.data_path == ""
    assert resolve_identity({"owner-name": "a", "data-path": "/d"}, None).source == "trained"
    with pytest.raises(FairPoolError, match="choose one"):
        resolve_identity({"owner-name": "a", "data-path": "/d", "adapter-path": "/x"}, None)
    with pytest.raises(FairPoolError, match="neither"):
        resolve_identity({"owner-name": "a"}, None)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "Describe the park.", "chosen": " It is calm.", "rejected": " It is noisy."}\n' * 3)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_value_refuses_a_mismatched_adapter_before_writing(tmp_path, base_model_dir, fast_spec, eval_file,
                                                           wrong_base_adapter, capsys):
    build_adapter(tmp_path / "r16", base_model_dir, dataclasses.replace(fast_spec, lora_r=16))
    out = tmp_path / "out"
    common = ["--eval", str(eval_file), "--base-model", str(base_model_dir), "--out", str(out), "--composition", "sum"]
    assert main(["value", "--adapter", f"a={tmp_path / 'r16'}", *common]) == 2
    assert "--lora-r 16" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={wrong_base_adapter}", *common]) == 2
    assert "another base model" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={eval_file}", *common]) == 2
    assert "not a directory" in _one_error_line(capsys)
    assert not out.exists()


def test_value_adapter_argument_rules(tmp_path, good, eval_file, capsys):
    out = tmp_path / "out"
    common = ["--eval", str(eval_file), "--out", str(out)]
    assert main(["value", *common]) == 2
    assert "--owner NAME=PATH or --adapter NAME=DIR" in _one_error_line(capsys)
    assert main(["value", "--owner", f"a={eval_file}", "--adapter", f"a={good[0]}", *common]) == 2
    assert "both --owner and --adapter" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={good[0]}", "--composition", "size", *common]) == 2
    assert "give --adapter-examples for a (existing adapters)" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={good[0]}", *common]) == 2  # size is the default
    assert "give --adapter-examples for a (existing adapters), or choose --composition sum" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={good[0]}", "--adapter-examples", "b=3", *common]) == 2
    assert "no --adapter b=DIR" in _one_error_line(capsys)
    assert main(["value", "--adapter", f"a={good[0]}", "--adapter-examples", "a=x", *common]) == 2
    assert "whole number" in _one_error_line(capsys)
    assert not out.exists()


def test_generate_refuses_an_adapter_for_another_base(base_model_dir, good, wrong_base_adapter, capsys):
    args = ["generate", "--base-model", str(base_model_dir), "--prompt", "Describe the park.", "--max-new-tokens", "3"]
    assert main([*args, "--adapter", f"x={wrong_base_adapter}", "--coalition", "x"]) == 2
    assert "trained for another base model?" in _one_error_line(capsys)
    assert main([*args, "--adapter", f"x={good[0]}", "--coalition", "x", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("Describe the park.")


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_federation_values_trained_owners_and_an_existing_adapter(tmp_path, fast_spec, default_market, good):
    from common.config.job import OwnerEntry
    from common.data import load_preferences, save_preferences_jsonl
    from common.trust.signing import generate_private_key, load_private_key, public_key_text, save_keypair
    from server.federation.ledger import Ledger
    from server.federation.run import LEDGER_FILE
    from tests.local_federation import make_federation, run

    owners = {}
    for name in ("clean", "flipped"):
        examples, _ = load_preferences(default_market.owners[name])
        owners[name] = tmp_path / f"{name}.jsonl"
        save_preferences_jsonl(examples[:32], owners[name])
    evaluation, _ = load_preferences(default_market.eval_path)
    save_preferences_jsonl(evaluation[:40], tmp_path / "eval.jsonl")
    fed = make_federation(tmp_path, fast_spec, owners, tmp_path / "eval.jsonl")
    key, _ = save_keypair(generate_private_key(), tmp_path / "keys", "holder")
    holder = OwnerEntry("holder", public_key=public_key_text(load_private_key(key).public_key()))
    fed.job = dataclasses.replace(fed.job, owners=fed.job.owners + (holder,))
    fed.node_configs.append({"owner-name": "holder", "adapter-path": str(good[0]), "adapter-examples": 20,
                             "signing-key": str(key)})
    report, grid = run(fed)
    assert report is not None and grid.trainings == 3
    by_name = {o["name"]: o for o in report["owners"]}
    assert by_name["holder"]["source"] == "adapter" and by_name["holder"]["status"] == "valued"
    assert by_name["holder"]["num_examples"] == 20 and by_name["holder"]["metrics"]["from_adapter"] == 1.0
    assert by_name["clean"]["source"] == by_name["flipped"]["source"] == "trained"
    assert isinstance(report["games"][0]["values"]["holder"]["value"], float)
    with Ledger(Path(fed.job.out_dir) / LEDGER_FILE) as ledger:
        metas = {s["owner"]: s["meta"] for s in ledger.submissions(fed.job.run_id)}
    assert metas["holder"]["source"] == "adapter" and metas["clean"]["source"] == "trained"


def test_admission_and_valuation_share_one_content_check(tmp_path, expected, fast_spec):
    """Issue 13: ``Admission.reason`` and ``rejection_reason`` were two copies of the admission
    checks. Every content problem gets the same reason from both."""
    from common.config.job import OwnerEntry, ValuationJob
    from server.federation.admission import Admission
    from server.federation.ledger import Ledger
    from server.valuation.pipeline import Submission, rejection_reason

    job = ValuationJob(run_id="r", owners=(OwnerEntry("a", adapter="/x"),), eval_path="-", out_dir=str(tmp_path),
                       spec=fast_spec, simulated=False, composition="sum")
    good = _random_tensors(expected)
    key = sorted(good)[0]
    cases = {"good": dict(good), "missing": {k: v for k, v in good.items() if k != key},
             "nan": {**good, key: np.full_like(good[key], np.nan)},
             "double": {**good, key: good[key].astype(np.float64)}, "huge": {**good, key: good[key] * 1e9}}
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r", job.to_json())
        admission = Admission(job, ledger, expected)
        seen = set()
        for name, tensors in cases.items():
            for source in ("adapter", "trained"):
                sub = Submission("a", tensors=tensors, source=source)
                reason = rejection_reason(sub, expected, fast_spec.lora_r, job.adapter_limits, job.composition)
                assert admission.reason(sub, None) == reason, (name, source)
                seen.add(reason)
        assert None in seen and len(seen) >= 5  # the cases really differ
