"""Scorers and the generation-based game, with a stand-in decoder (decoding has its own tests)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from common.valuation.utility import all_masks
from server.federation.ledger import Ledger
from server.valuation.generation_game import CoalitionGenerations, reward_game, reward_game_key
from server.valuation.scorers import RewardModelScorer, import_scorer, resolve_scorers


class FakeDecoder:
    """Answers each prompt with the sorted member indices, and counts decodes."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def generate(self, prompts, members, config):
        self.calls.append(list(members))
        return [" " + "".join(str(m) for m in sorted(members)) for _ in prompts]


def digits(prompts, responses):
    return [float(len(r.strip())) if not p.startswith("skip") else math.nan for p, r in zip(prompts, responses)]


def test_each_coalition_is_decoded_once_and_shared_by_scorers():
    decoder = FakeDecoder()
    gens = CoalitionGenerations(decoder, ["a", "b", "skip me"], config=None, n=3)
    first = reward_game(["x", "y", "z"], gens, "digits", digits)
    second = reward_game(["x", "y", "z"], gens, "length", lambda p, r: [float(len(x)) for x in r])
    values = first.utilities(all_masks(3))
    assert list(values) == [bin(m).count("1") for m in range(8)], "nan (out of domain) prompts are skipped"
    second.utilities(all_masks(3))
    assert len(decoder.calls) == 8


def test_all_out_of_domain_is_an_error():
    gens = CoalitionGenerations(FakeDecoder(), ["skip 1", "skip 2"], config=None, n=1)
    with pytest.raises(ConfigError, match="scored none"):
        reward_game(["x"], gens, "digits", digits).utilities([1])


def test_reward_utilities_persist_in_the_ledger(tmp_path):
    key = reward_game_key("digits", ["d1", "d2"], "fp", "sum", [3, 4], ["a"], {"max_new_tokens": 4}, "builtin:d")
    assert key != reward_game_key("digits", ["d1", "d3"], "fp", "sum", [3, 4], ["a"], {"max_new_tokens": 4},
                                  "builtin:d")
    decoder = FakeDecoder()
    with Ledger(tmp_path / "l.sqlite") as ledger:
        game = reward_game(["x", "y"], CoalitionGenerations(decoder, ["a"], None, 2), "digits", digits,
                           key=key, store=ledger)
        game.utilities(all_masks(2))
    with Ledger(tmp_path / "l.sqlite") as ledger:  # a re-run: nothing decoded again
        again = reward_game(["x", "y"], CoalitionGenerations(decoder, ["a"], None, 2), "digits", digits,
                            key=key, store=ledger)
        assert list(again.utilities(all_masks(2))) == [0, 1, 1, 2]
    assert len(decoder.calls) == 4 and again.computed == 0


def test_user_scorer_by_reference():
    scorer = import_scorer("tests.scorer_fixtures:length_score")
    assert scorer(["p"], ["abc"]) == [3.0]
    for bad in ("tests.scorer_fixtures", "tests.nope:f", "tests.scorer_fixtures:missing"):
        with pytest.raises(ConfigError):
            import_scorer(bad)


def test_unknown_scorer_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown scorer 'nope'.*helpful"):
        resolve_scorers(["nope"], {}, {})


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, base_model_dir):
    """A tiny sequence-classification model saved locally, as a user's reward model would be."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=96, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2ForSequenceClassification(config)
    directory = tmp_path_factory.mktemp("reward-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_reward_model_scorer_scores_in_batches(reward_model_dir):
    scorer = RewardModelScorer(reward_model_dir, batch_size=2)
    prompts = ["Describe the park."] * 5
    responses = [" It is calm.", " It is noisy and dark.", " Lovely.", " Awful.", " It is calm."]
    scores = scorer(prompts, responses)
    assert len(scores) == 5 and all(np.isfinite(scores))
    assert scores[0] == pytest.approx(scores[4], abs=1e-5), "same text, same score, whatever the batch"
    assert len(set(round(s, 5) for s in scores[:4])) > 1
    resolved = resolve_scorers(["rm"], {"rm": str(reward_model_dir)}, {})
    assert resolved["rm"](prompts[:1], responses[:1]) == pytest.approx(scores[:1], abs=1e-5)


def test_missing_reward_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RewardModelScorer(tmp_path / "nope")


def _console_python(code: str, cwd, **env):
    """Run ``code`` as a console script runs: without the current folder on ``sys.path`` (-P)."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    return subprocess.run([sys.executable, "-P", "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": root, **env})


def test_a_scorer_module_in_the_current_folder_is_found_and_never_shadows_fairpool(tmp_path):
    """Issue 14 #6: `--scorer mine=myscore:fn` from the folder holding myscore.py, as users
    expect, with no PYTHONPATH; the user's own common.py there does not replace FairPool's."""
    (tmp_path / "myscore.py").write_text("def fn(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    (tmp_path / "common.py").write_text("raise SystemExit('the user common.py was imported')\n")
    code = ("import sys; import common.errors; from server.valuation.scorers import import_scorer; "
            "f = import_scorer('myscore:fn'); print(f(['p'], ['abc'])); import common.data; "
            "print(sys.modules['common'].__file__.endswith('__init__.py'))")
    out = _console_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[3.0]", "True"]
    assert _console_python("import myscore", tmp_path).returncode != 0, "-P really leaves the folder off the path"


def test_a_scorer_module_is_found_in_the_import_path_the_cli_hands_its_processes(tmp_path):
    elsewhere = tmp_path / "lib"
    elsewhere.mkdir()
    (elsewhere / "theirs.py").write_text("import not_installed_anywhere\ndef fn(p, r):\n    return [0.0] * len(r)\n")
    (elsewhere / "good.py").write_text("def fn(p, r):\n    return [1.0] * len(r)\n")
    code = ("from server.valuation.scorers import import_scorer; print(import_scorer('good:fn')([''], ['x']))")
    assert _console_python(code, tmp_path).returncode != 0
    out = _console_python(code, tmp_path, FAIRPOOL_IMPORT_PATH=str(elsewhere))
    assert out.stdout.strip() == "[1.0]", out.stderr
    broken = _console_python("from server.valuation.scorers import import_scorer; import_scorer('theirs:fn')",
                             tmp_path, FAIRPOOL_IMPORT_PATH=str(elsewhere))
    assert "No module named 'not_installed_anywhere'" in broken.stderr, "the real missing import is named"
