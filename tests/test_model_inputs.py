"""Real users' models and settings: base-model checks, relative paths, --spec, --device, chat templates.

Every mistake is one line on stderr, exit status 2, before any work, with nothing written —
in ``value``, ``generate`` and ``fidelity``. The training settings come from one place (the
spec dataclass): the parser, ``--spec FILE`` and docs/cli.md agree with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = '{"prompt": "Describe the park.", "chosen": " It is calm.", "rejected": " It is noisy."}\n'
CHAT = json.dumps({"prompt": [{"role": "user", "content": "Describe the park."}],
                   "chosen": [{"role": "assistant", "content": "It is calm."}],
                   "rejected": [{"role": "assistant", "content": "It is noisy."}]}) + "\n"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from common.embedded.model_zoo import ZooModelConfig, build_zoo_model

    return build_zoo_model(tmp_path_factory.mktemp("zoo") / "llama", ZooModelConfig(architecture="llama"))


@pytest.fixture
def data(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD * 3)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(CHAT * 3)
    return good, chat


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _no_tokenizer_dir(tmp_path, llama_dir):
    import shutil

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for item in llama_dir.iterdir():
        if item.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(item, folder / item.name)
    return folder


def _classifier_dir(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from common.embedded.base_model import build_base_model

    folder = tmp_path / "classifier"
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=600, num_labels=2,
                                                        bos_token_id=0, eos_token_id=0))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(build_base_model()).save_pretrained(folder)
    return folder


def test_base_model_problems_are_one_line_in_every_command(tmp_path, llama_dir, data, capsys):
    good, _ = data
    cases = {
        "missing": (tmp_path / "nope", "no such directory"),
        "no_tokenizer": (_no_tokenizer_dir(tmp_path, llama_dir), "no tokenizer files"),
        "classifier": (_classifier_dir(tmp_path), "not a causal language model (GPT2ForSequenceClassification)"),
    }
    capsys.readouterr()  # building the folders printed progress bars
    for name, (model_dir, problem) in cases.items():
        commands = {
            "value": ["value", "--owner", f"a={good}", "--eval", str(good), "--base-model", str(model_dir),
                      "--out", str(tmp_path / f"out-{name}")],
            "fidelity": ["fidelity", "--owner", f"a={good}", "--eval", str(good), "--base-model", str(model_dir),
                         "--out", str(tmp_path / f"fid-{name}")],
            "generate": ["generate", "--adapter", f"a={tmp_path}", "--prompt", "hi", "--base-model", str(model_dir)],
        }
        for command, argv in commands.items():
            code, err = _run(argv, capsys)
            line = _one_error(err)
            assert code == 2, (command, name, err)
            assert problem in line and str(model_dir) in line, (command, name, line)
        assert not (tmp_path / f"out-{name}").exists() and not (tmp_path / f"fid-{name}").exists()


def test_relative_base_model_is_resolved_before_the_job_is_written(tmp_path, llama_dir, monkeypatch):
    from common.embedded.default_job import spec_for

    monkeypatch.chdir(llama_dir.parent)
    spec = spec_for(llama_dir.name)
    assert spec.base_model == str(llama_dir.resolve()) and Path(spec.base_model).is_absolute()
    assert spec.base_fingerprint  # the weight files' digest


def test_weights_fingerprint_follows_the_files_not_the_dtype(tmp_path, llama_dir):
    import shutil

    from transformers import AutoModelForCausalLM

    from common.model.base import load_base_model, weights_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(llama_dir, copy)
    assert weights_fingerprint(copy) == weights_fingerprint(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    with __import__("torch").no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(copy)
    assert weights_fingerprint(copy) != weights_fingerprint(llama_dir)
    from common.config.hardware import Hardware

    bf16, _ = load_base_model(llama_dir, hardware=Hardware(device="cpu", dtype="bfloat16"))
    assert str(next(bf16.parameters()).dtype) == "torch.bfloat16"


def test_conversational_data_without_chat_template_fails_before_any_work(tmp_path, llama_dir, data, capsys):
    _, chat = data
    out = tmp_path / "out"
    code, err = _run(["value", "--owner", f"a={chat}", "--eval", str(chat), "--base-model", str(llama_dir),
                      "--out", str(out)], capsys)
    line = _one_error(err)
    assert code == 2 and str(llama_dir) in line and "with --chat-template (a Jinja template" in line
    assert not out.exists()


def test_chat_template_file_travels_in_the_spec(tmp_path, llama_dir, data):
    from common.embedded.default_job import spec_for
    from common.embedded.model_zoo import CHATML_TEMPLATE
    from server.cli.main import build_parser, check_data_needs, spec_overrides

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE)
    _, chat = data
    args = build_parser().parse_args(["value", "--owner", f"a={chat}", "--eval", str(chat), "--out", "o",
                                      "--chat-template", str(template)])
    spec = spec_for(str(llama_dir), **spec_overrides(args))
    assert spec.chat_template == CHATML_TEMPLATE
    from common.data import load_preferences

    check_data_needs(spec, [load_preferences(chat)[0]])  # no error now
    plain = spec_for(str(llama_dir))
    assert plain.digest() != spec.digest(), "the template is part of what owners sign"


def test_spec_file_and_options_build_one_spec(tmp_path, data):
    from server.cli.main import build_parser, spec_overrides

    good, _ = data
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('max-length = 512\nmax_prompt_length = 384\nlearning-rate = 5e-5\n'
                         'lora-target-modules = ["q_proj", "v_proj"]\nbatch-size = 4\n')
    args = build_parser().parse_args(["value", "--owner", f"a={good}", "--eval", str(good), "--out", "o",
                                      "--spec", str(spec_file), "--batch-size", "2",
                                      "--gradient-accumulation-steps", "8", "--lora-alpha", "32"])
    overrides = spec_overrides(args)
    assert overrides == {"max_length": 512, "max_prompt_length": 384, "learning_rate": 5e-5,
                         "target_modules": "q_proj,v_proj", "batch_size": 2, "gradient_accumulation_steps": 8,
                         "lora_alpha": 32, "seed": 0}
    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps({"epochs": 2, "beta": 0.2}))
    args = build_parser().parse_args(["value", "--owner", f"a={good}", "--eval", str(good), "--out", "o",
                                      "--spec", str(json_file)])
    assert spec_overrides(args) == {"epochs": 2.0, "beta": 0.2, "seed": 0}


@pytest.mark.parametrize("argv_tail, problem", [
    (["--spec", "SPEC_BAD_KEY"], "unknown setting 'max_lenght'"),
    (["--spec", "SPEC_BAD_TYPE"], "training spec: --max-length must be int"),
    (["--max-prompt-length", "200", "--max-length", "100"], "--max-prompt-length (200) must be below --max-length (100)"),
    (["--max-length", "0"], "training spec: --max-length must be a finite positive number"),
    (["--device", "cuda"], "no CUDA device is available"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--dtype", "int8"], "--dtype 'int8'"),
])
def test_bad_settings_are_refused_before_any_work(argv_tail, problem, tmp_path, data, capsys):
    good, _ = data
    (tmp_path / "bad-key.toml").write_text("max_lenght = 5\n")
    (tmp_path / "bad-type.json").write_text('{"max_length": "long"}')
    tail = [{"SPEC_BAD_KEY": str(tmp_path / "bad-key.toml"), "SPEC_BAD_TYPE": str(tmp_path / "bad-type.json")}
            .get(item, item) for item in argv_tail]
    out = tmp_path / "out"
    code, err = _run(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(out), *tail], capsys)
    assert code == 2 and problem in _one_error(err)
    assert not out.exists()


def test_non_finite_and_out_of_range_numbers_are_refused_by_the_parser(tmp_path, data, capsys):
    good, _ = data
    for tail in (["--learning-rate", "inf"], ["--epochs", "nan"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as info:
            main(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(tmp_path / "o"), *tail])
        assert info.value.code == 2
        assert "must be" in capsys.readouterr().err


def test_docs_list_every_training_and_hardware_option_with_its_real_default():
    from common.config.hardware import Hardware
    from common.config.options import markdown_table
    from common.config.spec import TrainingSpec

    doc = (ROOT / "docs" / "cli.md").read_text()
    for cls in (TrainingSpec, Hardware):
        assert markdown_table(cls) in doc, f"docs/cli.md is out of date; paste:\n{markdown_table(cls)}"


def test_help_shows_the_spec_defaults():
    from server.cli.main import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["value"]  # noqa: SLF001 - argparse has no public getter
    text = " ".join(sub.format_help().split())
    assert "--max-length N" in text and "(default: 96)" in text
    assert "--lora-target-modules TEXT" in text and "--gradient-accumulation-steps N" in text


def test_hardware_resolves_to_the_cpu_here_and_bf16_where_asked():
    import torch

    from common.config.hardware import Hardware

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto resolves to it")
    auto = Hardware().resolve()
    assert auto.device == "cpu" and auto.dtype == torch.float32
    assert Hardware(dtype="bfloat16").resolve().dtype == torch.bfloat16


def test_simulation_gives_owners_no_gpu_without_one(tmp_path):
    import torch

    from common.config.hardware import Hardware
    from server.federation.simulation import simulation_gpus, write_flower_home

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert simulation_gpus(Hardware()) == (0, 0.0)
    text = (write_flower_home(tmp_path, 3, gpus=(2, 0.5)) / "config.toml").read_text()
    assert "client-resources.num-gpus = 0.5" in text and "init-args.num-gpus = 2" in text
    assert "client-resources.num-gpus = 0\n" in (write_flower_home(tmp_path / "b", 3) / "config.toml").read_text()


def test_the_owner_picks_its_own_device_from_its_node_config():
    from client.owner import node_hardware

    requested = {"device": "auto", "dtype": "auto", "gpus_per_owner": 1.0}
    assert node_hardware({}, requested).device == "auto"
    mine = node_hardware({"device": "cpu", "dtype": "bfloat16"}, requested)
    assert (mine.device, mine.dtype) == ("cpu", "bfloat16")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_generate_chat_prompts_need_a_chat_template(tmp_path, llama_dir, capsys):
    from peft import get_peft_model

    from common.embedded.default_job import spec_for
    from common.model.base import load_spec_model
    from common.model.lora import lora_config

    spec = spec_for(str(llama_dir))
    model, _ = load_spec_model(spec)
    peft = get_peft_model(model, lora_config(spec, model))
    peft.save_pretrained(tmp_path / "adapter")
    capsys.readouterr()
    code, err = _run(["generate", "--base-model", str(llama_dir), "--adapter", f"x={tmp_path / 'adapter'}",
                      "--coalition", "x", "--chat", "--prompt", "Hi"], capsys)
    assert code == 2 and "with --chat-template (a Jinja template" in _one_error(err)
    code = main(["generate", "--base-model", str(llama_dir), "--adapter", f"x={tmp_path / 'adapter'}",
                 "--coalition", "x", "--prompt", "Hi", "--max-new-tokens", "3"])
    assert code == 0 and capsys.readouterr().out.startswith("Hi")


def test_evaluation_set_without_a_usable_pair_is_refused(tmp_path, data, capsys):
    """Issue 12 #8: every prompt longer than max_length gave a signed report of zeros, exit 0."""
    good, _ = data
    long_eval = tmp_path / "long.jsonl"
    long_eval.write_text(json.dumps({"prompt": "word " * 400, "chosen": " a", "rejected": " b"}) + "\n")
    out = tmp_path / "out"
    code, err = _run(["value", "--owner", f"a={good}", "--eval", str(long_eval), "--out", str(out)], capsys)
    line = _one_error(err)
    assert code == 2 and "no usable pair" in line and "fills the --max-length of 96 tokens" in line and str(long_eval) in line
    assert not out.exists()


def test_unusable_held_out_pairs_are_left_out_and_counted(llama_dir):
    from transformers import AutoTokenizer

    from common.data import PreferenceExample
    from common.model.tokenization import usable_pairs

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    short = PreferenceExample("Describe the park.", " It is calm.", " It is noisy.")
    long = PreferenceExample("word " * 200, " a", " b")
    kept, unusable = usable_pairs(tokenizer, [short, long, short], max_length=64)
    assert kept == [short, short] and unusable == 1
    kept, unusable = usable_pairs(tokenizer, [long], max_length=64, max_prompt_length=32)
    assert kept == [long] and unusable == 0  # the prompt limit keeps its end, so it fits
