"""Owner side: DPO training, the reference model, the ClientApp called with a real Message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.trainer import train_adapter
from common.data import PreferenceExample, load_preferences
from common.errors import FairPoolError
from common.model.base import load_base_model
from common.model.lora import expected_adapter_shapes


@pytest.fixture(scope="module")
def small_owner(default_market):
    examples, _ = load_preferences(default_market.owners["clean-small"])
    return examples[:48]


@pytest.fixture(scope="module")
def trained(fast_spec, small_owner):
    return train_adapter(fast_spec, small_owner)


def test_adapter_has_the_spec_shapes_and_moved_from_init(trained, fast_spec):
    base, _ = load_base_model(fast_spec.base_model)
    expected = expected_adapter_shapes(fast_spec, base)
    assert {k: v.shape for k, v in trained.tensors.items()} == expected
    assert all(v.dtype == np.float32 for v in trained.tensors.values())
    lora_b = [v for k, v in trained.tensors.items() if "lora_B" in k]
    assert lora_b and all(np.abs(b).max() > 0 for b in lora_b), "LoRA B starts at 0; DPO must move it"
    assert trained.num_examples == 48
    assert trained.metrics["steps"] >= 3


def test_training_is_deterministic(trained, fast_spec, small_owner):
    assert train_adapter(fast_spec, small_owner).sha256 == trained.sha256


def test_reference_model_is_the_base(fast_spec, small_owner, tmp_path):
    """Plain base + peft_config: TRL keeps no reference copy and no "ref" adapter, so its
    reference log-probs are those of π₀ with the adapter disabled (what arithmetic needs)."""
    from client.trainer import make_dpo_trainer

    model, tokenizer = load_base_model(fast_spec.base_model)
    trainer = make_dpo_trainer(fast_spec, model, tokenizer, small_owner, str(tmp_path))
    assert trainer.ref_model is None
    assert set(trainer.model.peft_config) == {"default"}


def test_first_dpo_loss_is_log2(fast_spec, small_owner):
    """Policy = reference at step 0 (LoRA B starts at 0): the first loss is exactly log 2."""
    spec = dataclasses.replace(fast_spec, epochs=1.0, batch_size=len(small_owner))
    result = train_adapter(spec, small_owner)
    assert result.metrics["train_loss"] == pytest.approx(np.log(2), abs=1e-4)


def test_too_long_prompts_are_dropped_and_counted(fast_spec, small_owner):
    spec = dataclasses.replace(fast_spec, max_length=12)
    long_prompt = PreferenceExample("Tell me " + "about the river and the lake " * 10 + "?", " Nice.", " Bad.")
    result = train_adapter(spec, [*small_owner[:8], long_prompt])
    assert result.dropped == {"prompt_too_long": 1}
    assert result.num_examples == 8


def test_wrong_base_model_is_refused(fast_spec, small_owner):
    spec = dataclasses.replace(fast_spec, base_fingerprint="0" * 64)
    with pytest.raises(FairPoolError, match="does not match"):
        train_adapter(spec, small_owner)


def _call_client(spec, node_config):
    from client.app import app

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    message = Message(content=RecordDict({"spec": ConfigRecord(spec.to_record())}), dst_node_id=1,
                      message_type="train")
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
    return app(message, context)


def _all_config_strings(content: RecordDict) -> str:
    texts = []
    for key in content.keys():
        record = content[key]
        if isinstance(record, ConfigRecord):
            texts += [str(v) for v in record.values()]
    return "\n".join(texts)


def test_client_app_replies_with_adapter_and_never_the_data(fast_spec, default_market):
    path = default_market.owners["clean-small"]
    reply = _call_client(fast_spec, {"owner-name": "acme", "data-path": str(path)})
    assert set(reply.content.keys()) == {"meta", "adapter", "metrics"}
    meta = dict(reply.content["meta"])
    assert meta["owner"] == "acme" and meta["num_examples"] == 80
    tensors = {k: a.numpy() for k, a in reply.content["adapter"].items()}
    from common.trust.digest import tensors_sha256

    assert tensors_sha256(tensors) == meta["sha256"]
    examples, _ = load_preferences(path)
    sent = _all_config_strings(reply.content)
    for example in examples:
        assert example.chosen not in sent and example.rejected not in sent and example.prompt not in sent


def test_client_app_reports_bad_data_instead_of_crashing(fast_spec, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    reply = _call_client(fast_spec, {"owner-name": "acme", "data-path": str(bad)})
    meta = dict(reply.content["meta"])
    assert "adapter" not in reply.content
    assert "bad.jsonl:2" in meta["error"] and "rejected" in meta["error"]


def test_client_app_without_identity_says_how_to_configure(fast_spec):
    reply = _call_client(fast_spec, {})
    assert "owner-name" in dict(reply.content["meta"])["error"]


# ------------------------------------------------------------------------------------------
# data preparation: what max_length does, and drop counts reaching the reply


def _lengths_fixture(base_model_dir):
    _, tokenizer = load_base_model(str(base_model_dir))

    def n_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    return tokenizer, n_tokens


def test_check_lengths_counts_dropped_and_truncated_examples(base_model_dir):
    from client.trainer import check_lengths

    tokenizer, n_tokens = _lengths_fixture(base_model_dir)
    eos = tokenizer.eos_token
    fits = PreferenceExample("Describe the park.", " It is calm.", " It is noisy.")
    long_answer = PreferenceExample("Describe the park.", " It is calm" + " and green" * 20 + ".", " No.")
    long_prompt = PreferenceExample("Tell me " + "about the river and the lake " * 10 + "?", " Nice.", " Bad.")
    max_length = n_tokens(fits.prompt + fits.rejected + eos)  # the longest sequence of `fits`, exactly
    assert n_tokens(long_answer.prompt) < max_length < n_tokens(long_answer.prompt + long_answer.chosen + eos)
    assert n_tokens(long_prompt.prompt) > max_length

    check = check_lengths([fits, long_answer, long_prompt, long_answer], tokenizer, max_length)
    assert (check.kept, check.prompt_too_long, check.truncated) == ([fits, long_answer, long_answer], 1, 2)
    # one token less and `fits` is truncated too: the boundary is "longer than max_length"
    assert check_lengths([fits], tokenizer, max_length - 1).truncated == 1


def test_check_lengths_agrees_with_what_trl_keeps_and_truncates(fast_spec, tmp_path):
    """The counts are only honest if they match TRL's own preprocessing of the same data."""
    from client.trainer import check_lengths, make_dpo_trainer

    spec = dataclasses.replace(fast_spec, max_length=16)
    model, tokenizer = load_base_model(spec.base_model)
    examples = [
        PreferenceExample("Describe the park.", " It is calm.", " It is noisy."),
        PreferenceExample("Describe the park.", " It is calm" + " and green" * 8 + ".", " No."),
        PreferenceExample("Tell me " + "about the river and the lake " * 5 + "?", " Nice.", " Bad."),
        PreferenceExample("Describe the lake in one short sentence please now", " It is calm.", " It is noisy."),
    ]
    check = check_lengths(examples, tokenizer, spec.max_length)
    trainer = make_dpo_trainer(spec, model, tokenizer, examples, str(tmp_path))
    rows = list(trainer.train_dataset)
    longest = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    assert len(rows) == len(check.kept) and check.prompt_too_long == len(examples) - len(rows) > 0
    assert check.truncated == sum(n > spec.max_length for n in longest) > 0


def test_all_prompts_too_long_is_a_clear_error(fast_spec, small_owner):
    spec = dataclasses.replace(fast_spec, max_length=2)
    with pytest.raises(FairPoolError) as info:
        train_adapter(spec, small_owner[:4])
    assert str(info.value) == (
        "no usable examples: all 4 dropped (prompt_too_long: the prompt alone fills max_length=2 tokens)"
    )


def test_client_reply_carries_drop_and_truncation_counts(fast_spec, small_owner, tmp_path):
    import json

    good = small_owner[:8]
    lines = [json.dumps(e.as_dict()).encode() for e in good]
    lines += [
        b'{"prompt": "caf\xe9?", "chosen": " a", "rejected": " b"}',  # invalid_utf8
        json.dumps({"prompt": "p", "chosen": " ", "rejected": " b"}).encode(),  # empty_field
        json.dumps({"prompt": "p", "chosen": " same", "rejected": " same"}).encode(),  # chosen_equals_rejected
        lines[0],  # duplicate
        json.dumps({"prompt": "Tell me " + "about the river and the lake " * 20 + "?",
                    "chosen": " Nice.", "rejected": " Bad."}).encode(),  # prompt_too_long (trainer)
    ]
    path = tmp_path / "owner.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    spec = dataclasses.replace(fast_spec, max_length=17)  # the market's sequences are 14..18 tokens
    reply = _call_client(spec, {"owner-name": "acme", "data-path": str(path)})
    meta = dict(reply.content["meta"])
    assert "error" not in meta and meta["num_examples"] == 8
    assert json.loads(meta["dropped"]) == {"invalid_utf8": 1, "empty_field": 1, "chosen_equals_rejected": 1,
                                           "duplicate": 1, "prompt_too_long": 1}
    tokenizer, n_tokens = _lengths_fixture(fast_spec.base_model)
    eos = tokenizer.eos_token
    expected_truncated = sum(max(n_tokens(e.prompt + e.chosen + eos), n_tokens(e.prompt + e.rejected + eos)) > 17
                             for e in good)
    assert 0 < expected_truncated < 8  # the spec makes some, not all, of the good examples too long
    assert dict(reply.content["metrics"])["truncated_examples"] == expected_truncated


def test_client_reply_names_the_file_when_every_row_is_dropped(fast_spec, tmp_path):
    path = tmp_path / "useless.jsonl"
    path.write_text('{"prompt": "p", "chosen": "x", "rejected": "x"}\n{"prompt": "", "chosen": "a", "rejected": "b"}\n')
    reply = _call_client(fast_spec, {"owner-name": "acme", "data-path": str(path)})
    assert "adapter" not in reply.content
    assert dict(reply.content["meta"])["error"] == (
        f"{path}: no usable examples: all 2 rows dropped "
        "(empty_field: 1 (line 2), chosen_equals_rejected: 1 (line 1))"
    )


# --------------------------------------------------------------------------- live progress (issue 14 #3)

def test_training_reports_step_loss_and_eta_while_it_runs_and_once_at_the_end(fast_spec, small_owner):
    events: list[dict] = []
    result = train_adapter(dataclasses.replace(fast_spec, epochs=2.0), small_owner[:32], on_step=events.append)
    assert events, "at least the final step is reported"
    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and events[-1]["step"] == events[-1]["steps"] == int(result.metrics["steps"])
    assert events[-1]["epoch"] == pytest.approx(2.0) and np.isfinite(events[-1]["loss"])
    assert events[-1]["eta_s"] == 0.0 and events[-1]["message"].startswith(f"step {events[-1]['steps']}/")


def test_a_simulated_owner_appends_its_steps_to_the_progress_file_the_roster_names(fast_spec, default_market, tmp_path):
    from common.storage.progress import read_all
    from common.wire.messages import Roster

    progress = tmp_path / "progress.jsonl"
    roster = Roster(("acme",), (str(default_market.owners["clean-small"]),), ("",), ("",), (0,), str(progress))
    reply = _call_client_with(fast_spec, {"partition-id": 0}, {"roster": ConfigRecord(roster.to_record())})
    assert "error" not in dict(reply.content["meta"]) or not dict(reply.content["meta"])["error"]
    events = list(read_all(progress))
    assert events and {e["stage"] for e in events} == {"owner"} and {e["owner"] for e in events} == {"acme"}
    assert events[-1]["step"] == events[-1]["steps"] and events[-1]["message"].startswith("acme: step ")


def test_an_older_roster_without_a_progress_file_still_reads():
    from common.wire.messages import Roster

    record = Roster(("a",), ("p",), ("",), ("",), (0,)).to_record()
    del record["progress"]
    assert Roster.from_record(record).progress == ""


def _call_client_with(spec, node_config, extra_records):
    from client.app import app

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    message = Message(content=RecordDict({"spec": ConfigRecord(spec.to_record()), **extra_records}), dst_node_id=1,
                      message_type="train")
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
    return app(message, context)


def test_events_appended_by_several_processes_never_interleave(tmp_path):
    import subprocess
    import sys

    from common.storage.progress import read_all

    path = tmp_path / "progress.jsonl"
    code = ("import sys; from common.storage.progress import append_event\n"
            "for i in range(300): append_event(sys.argv[1], {'stage': 'owner', 'owner': sys.argv[2], 'step': i, "
            "'message': 'x' * 200})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"o{k}"]) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0] * 4
    events = list(read_all(path))
    assert len(events) == 1200
    for k in range(4):
        assert [e["step"] for e in events if e["owner"] == f"o{k}"] == list(range(300))


def test_the_view_draws_owner_steps_as_lines_off_a_terminal(capsys):
    from server.cli.progress_view import ProgressView

    with ProgressView(2) as view:
        view.show({"stage": "owner", "owner": "a", "step": 3, "steps": 10, "loss": 0.5, "eta_s": 7.0,
                   "message": "a: step 3/10, epoch 0.30, loss 0.5000, ETA 7s"})
    err = capsys.readouterr().err
    assert "owner: a: step 3/10, epoch 0.30, loss 0.5000, ETA 7s" in err and view.last_step["a"]["step"] == 3
