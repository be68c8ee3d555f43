"""The synthetic market: sizes, exact flip counts, ground truth and determinism."""

from __future__ import annotations

import json

from common.data import load_preferences
from common.embedded.lexicon import KIND_WORDS, SUBJECTS
from common.embedded.market import EVAL_SUBJECTS, default_profiles, make_market


def _is_correct(example) -> bool:
    return any(f" {w}" in example.chosen for w in KIND_WORDS)


def test_owner_sizes_and_label_quality(default_market):
    profiles = {p.name: p for p in default_profiles()}
    for name, path in default_market.owners.items():
        examples, _ = load_preferences(path, drop_duplicates=False)
        assert len(examples) == profiles[name].size
        flipped = sum(not _is_correct(e) for e in examples)
        assert flipped == round(profiles[name].flip_rate * profiles[name].size), name
    clean = load_preferences(default_market.owners["clean"], drop_duplicates=False)[0]
    small = load_preferences(default_market.owners["clean-small"], drop_duplicates=False)[0]
    assert len(small) * 4 == len(clean)
    assert default_market.owners["duplicate"].read_bytes() == default_market.owners["clean"].read_bytes()


def test_eval_set_is_correct_and_on_unseen_subjects(default_market):
    evaluation, _ = load_preferences(default_market.eval_path)
    assert len(evaluation) >= 150 and all(_is_correct(e) for e in evaluation)
    held_out = SUBJECTS[-EVAL_SUBJECTS:]
    assert all(any(s in e.prompt for s in held_out) for e in evaluation)
    training, _ = load_preferences(default_market.owners["clean"], drop_duplicates=False)
    assert not any(any(s in e.prompt for s in held_out) for e in training)


def test_same_seed_same_market_other_seed_differs(tmp_path):
    a = make_market(tmp_path / "a", seed=3, profiles=default_profiles(16), eval_size=10)
    b = make_market(tmp_path / "b", seed=3, profiles=default_profiles(16), eval_size=10)
    c = make_market(tmp_path / "c", seed=4, profiles=default_profiles(16), eval_size=10)
    assert a.owners["noisy"].read_bytes() == b.owners["noisy"].read_bytes()
    assert a.owners["noisy"].read_bytes() != c.owners["noisy"].read_bytes()
    manifest = json.loads((tmp_path / "a" / "market.json").read_text())
    assert [o["name"] for o in manifest["owners"]] == ["clean", "clean-small", "noisy", "flipped", "duplicate"]
