"""Games, their memo, the persistent store, and the fast all-coalitions preference path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.game import Game
from common.valuation.preference_game import all_coalition_utilities, preference_game
from common.valuation.utility import all_masks, coalition_utilities
from server.federation.ledger import Ledger


def _counting_game(n: int, calls: list, **kw) -> Game:
    def utility(masks):
        calls.append(len(masks))
        return np.array([bin(int(m)).count("1") ** 2 for m in masks], dtype=float)

    return Game([f"p{i}" for i in range(n)], utility, **kw)


@pytest.mark.parametrize("n", [3, 22])  # dense memo and sparse memo
def test_memo_computes_each_coalition_once(n):
    calls: list[int] = []
    game = _counting_game(n, calls)
    first = game.utilities([0, 1, 3, 3, 5])
    assert list(first) == [0, 1, 4, 4, 4] and calls == [4]
    game.utilities([5, 1, 6])
    assert calls == [4, 1] and game.computed == 5 and game.requested == 8
    masks, values = game.known()
    assert list(masks) == [0, 1, 3, 5, 6] and list(values) == [0, 1, 4, 4, 4]


def test_ledger_store_means_a_rerun_never_pays_twice(tmp_path):
    calls: list[int] = []
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        _counting_game(4, calls, key="run1/preference", store=ledger).utilities(all_masks(4))
        assert ledger.utility_count("run1/preference") == 16
    with Ledger(tmp_path / "ledger.sqlite") as ledger:  # a new process, a new game object
        again = _counting_game(4, calls, key="run1/preference", store=ledger)
        assert list(again.utilities(all_masks(4))) == [bin(m).count("1") ** 2 for m in range(16)]
        assert again.computed == 0 and calls == [16]
        other = _counting_game(4, calls, key="run1/other", store=ledger)
        other.utilities([1, 2])
        assert other.computed == 2


def test_ledger_records_runs(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.start_run("r1", "{}")
        assert ledger.run("r1")["status"] == "running"
        ledger.finish_run("r1", "done", {"run_id": "r1"})
        assert ledger.run("r1") | {"created_at": 0} == {"run_id": "r1", "created_at": 0, "status": "done",
                                                        "report": {"run_id": "r1"}, "failure": None}
        assert ledger.run("nope") is None


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), pairs=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       rule=st.sampled_from(["sum", "mean", "size"]), metric=st.sampled_from(["accuracy", "logsigmoid"]),
       low_bits=st.integers(0, 5), ties=st.booleans())
def test_fast_path_equals_scalar_path(n, pairs, seed, rule, metric, low_bits, ties):
    rng = np.random.default_rng(seed)
    M = rng.integers(-2, 3, size=(n, pairs)).astype(float) if ties else rng.normal(size=(n, pairs))
    sizes = rng.integers(1, 50, size=n)
    fast = all_coalition_utilities(M, metric, rule, sizes, low_bits=low_bits)
    slow = coalition_utilities(M, all_masks(n), metric, rule, sizes)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_preference_game_uses_the_same_values_on_any_batch():
    rng = np.random.default_rng(1)
    M = rng.normal(size=(6, 30))
    full = preference_game(list("abcdef"), M).utilities(all_masks(6))
    sampled = preference_game(list("abcdef"), M).utilities(np.array([63, 5, 0, 17]))
    np.testing.assert_array_equal(sampled, full[[63, 5, 0, 17]])
    assert full[0] == 0.5


def test_a_failed_rerun_never_erases_a_published_report(tmp_path):
    """Issue 12 #5: a failed re-run turned a done run with its report into failed with NULL."""
    from server.federation.ledger import Ledger

    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.start_run("r1", "{}")
        ledger.finish_run("r1", "done", {"run_id": "r1", "values": [1]})
        ledger.start_run("r1", "{}")  # the same command again (a replay)
        assert ledger.run("r1")["status"] == "done"
        ledger.finish_run("r1", "failed", failure="wrong storage key")
        run = ledger.run("r1")
        assert run["status"] == "done" and run["report"] == {"run_id": "r1", "values": [1]}
        assert run["failure"] == "wrong storage key"
        ledger.start_run("r2", "{}")
        ledger.finish_run("r2", "failed", failure="boom")
        assert ledger.run("r2")["status"] == "failed" and ledger.run("r2")["report"] is None
        ledger.finish_run("r1", "done", {"run_id": "r1", "values": [2]})
        assert ledger.run("r1")["failure"] is None
