"""Data-mix advice (common.valuation.advice) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.valuation.advice import marginals_at, mix_advice
from common.valuation.bits import members_of
from common.valuation.game import Game


def _names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def _brute_best(table: np.ndarray, n: int) -> tuple[int, float]:
    """Largest utility; ties to more members, then to the smaller mask (the documented rule)."""
    masks = range(1 << n)
    best = max(masks, key=lambda m: (table[m], bin(m).count("1"), -m))
    return best, float(table[best])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(0, 10_000), st.booleans())
def test_an_enumerated_game_gets_the_brute_force_best_and_removals(n: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 3, size=1 << n).astype(float) if ties else rng.normal(size=1 << n)
    game = Game.from_table(_names(n), table)
    game.utilities(np.arange(1 << n))  # an exact valuation has evaluated every coalition
    computed = game.computed
    advice = mix_advice(game, dict.fromkeys(_names(n), 1.0), [2] * n)
    best, value = _brute_best(table, n)
    assert advice.method == "exact" and game.computed == computed  # nothing new evaluated
    assert advice.best == tuple(f"p{i}" for i in members_of(best, n)) and advice.best_value == value
    full = (1 << n) - 1
    assert advice.grand_value == table[full]
    assert advice.better_without == {f"p{i}": table[full ^ (1 << i)] - table[full]
                                     for i in range(n) if table[full ^ (1 << i)] > table[full]}
    assert advice.per_example == dict.fromkeys(_names(n), 0.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-2, 2, allow_nan=False).map(lambda w: round(w, 3)), min_size=2, max_size=12),
       st.floats(-1, 1, allow_nan=False))
def test_beam_search_finds_the_best_mix_of_an_additive_game(weights: list[float], offset: float) -> None:
    """Additive utility: the best coalition is every owner with a positive weight (zero-weight
    owners too, by the tie rule), and the search never enumerates 2ⁿ coalitions."""
    n = len(weights)
    w = np.array(weights)
    game = Game(_names(n), lambda masks: offset + ((masks[:, None] >> np.arange(n)) & 1) @ w)
    game.utilities(np.array([0, (1 << n) - 1]))  # a sampled valuation: ∅, N and a few more
    advice = mix_advice(game, dict.fromkeys(_names(n), 0.0), [1] * n)
    assert advice.method == "beam" or n == 1
    assert set(advice.best) == {f"p{i}" for i in range(n) if w[i] >= 0}
    assert advice.best_value == pytest.approx(offset + w[w > 0].sum())
    assert advice.searched <= 2 + 4 * n * n
    assert advice.better_without == pytest.approx({f"p{i}": -w[i] for i in range(n) if w[i] < 0})


def test_beam_search_is_at_least_as_good_as_every_single_owner_and_the_whole_pool() -> None:
    rng = np.random.default_rng(3)
    n = 9
    table = rng.normal(size=1 << n)
    game = Game.from_table(_names(n), table)
    advice = mix_advice(game, dict.fromkeys(_names(n), 0.0), [1] * n)
    assert advice.method == "beam"
    singles = max(table[1 << i] for i in range(n))
    assert advice.best_value >= max(singles, table[0], table[(1 << n) - 1])
    assert advice.best_value == table[sum(1 << int(p[1:]) for p in advice.best)]


def test_without_search_only_evaluated_coalitions_are_used() -> None:
    """Reward games decode every coalition: advice may not ask for new ones."""
    table = np.array([0.0, 1.0, 2.0, 0.5, 3.0, 0.0, 0.0, 1.5])  # 3 owners
    game = Game.from_table(_names(3), table)
    game.utilities(np.array([0, 1, 2, 4, 7]))  # ∅, singletons, N: no leave-one-out coalition
    advice = mix_advice(game, {"p0": 1.0, "p1": 0.0, "p2": -1.0}, [4, 2, 1], search=False)
    assert advice.method == "evaluated" and game.computed == 5
    assert advice.best == ("p2",) and advice.best_value == 3.0
    assert advice.better_without == {}  # no N ∖ i was evaluated: nobody is judged
    assert advice.per_example == {"p0": 0.25, "p1": 0.0, "p2": -1.0}


def test_marginals_at_a_coalition_from_stored_utilities() -> None:
    players = ["a", "b", "c"]
    stored = {frozenset(): 0.5, frozenset("a"): 0.8, frozenset("b"): 0.6, frozenset("ab"): 0.9,
              frozenset("abc"): 0.7}
    value, marginal = marginals_at(stored, players, frozenset("ab"))
    assert value == 0.9
    assert marginal["a"] == pytest.approx(0.3) and marginal["b"] == pytest.approx(0.1)  # v(ab) − v(b), v(ab) − v(a)
    assert marginal["c"] == pytest.approx(-0.2)  # v(abc) − v(ab): c would lower it
    _, marginal = marginals_at(stored, players, frozenset("b"))
    assert marginal["c"] is None  # v(bc) was not evaluated
    with pytest.raises(KeyError):
        marginals_at(stored, players, frozenset("c"))


# --------------------------------------------------------------------------- in the report and the CLI


def _report_file(tmp_path, estimator: str = "exact"):
    import json

    from common.trust.signing import REPORT_SCHEMA_VERSION
    from tests.test_report_html import make_report

    report = {"schema_version": REPORT_SCHEMA_VERSION, **make_report(estimator=estimator)}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return report, path


def test_every_rendering_of_the_report_gives_the_advice_brute_force_confirms(tmp_path) -> None:
    from server.cli.main import render_table
    from server.report.html import render_html
    from server.report.markdown import render_markdown

    report, _ = _report_file(tmp_path)
    game = report["games"][0]
    advice = game["advice"]
    rows = {frozenset(r["members"]): r["value"] for r in game["coalitions"]}
    assert advice["method"] == "exact" and len(rows) == 16
    top = max(rows.values())
    assert advice["best_value"] == top
    assert frozenset(advice["best"]) == max((c for c, v in rows.items() if v == top), key=len)
    full = frozenset(game["values"])
    assert advice["better_without"] == {p: rows[full - {p}] - rows[full] for p in full if rows[full - {p}] > rows[full]}
    assert "flipped" in advice["better_without"]  # its margins lean the wrong way
    assert advice["per_example"] == {p: v["value"] / 48 for p, v in game["values"].items()}
    sentence = f"Best mix: {' + '.join(advice['best'])}, utility {advice['best_value']:.4f}"
    for text in (render_markdown(report), render_table(report), render_html(report)):
        assert sentence in text and "The pool is better without flipped" in text


def test_whatif_prints_a_coalitions_utility_and_the_marginals(tmp_path, capsys) -> None:
    from server.cli.main import main

    report, path = _report_file(tmp_path)
    rows = {frozenset(r["members"]): r["value"] for r in report["games"][0]["coalitions"]}
    assert main(["whatif", "--report", str(path), "--coalition", "clean, noisy"]) == 0
    out = capsys.readouterr().out
    s = frozenset({"clean", "noisy"})
    assert f"v(clean + noisy) = {rows[s]:.4f}" in out
    printed = {line.split()[0]: (" ".join(line.split()[1:-1]), float(line.split()[-1]))
               for line in out.splitlines() if line.startswith("  ")}
    assert printed["clean"] == ("adds", pytest.approx(rows[s] - rows[frozenset({"noisy"})], abs=1e-4))
    assert printed["noisy"] == ("adds", pytest.approx(rows[s] - rows[frozenset({"clean"})], abs=1e-4))
    for outsider in ("small", "flipped"):
        assert printed[outsider] == ("would add", pytest.approx(rows[s | {outsider}] - rows[s], abs=1e-4))
    assert main(["whatif", "--report", str(path), "--coalition", ""]) == 0
    assert f"v(∅ (the base model)) = {rows[frozenset()]:.4f}" in capsys.readouterr().out


def test_whatif_refuses_what_it_cannot_answer_with_exit_2(tmp_path, capsys) -> None:
    from server.cli.main import main

    _, path = _report_file(tmp_path)
    assert main(["whatif", "--report", str(path), "--coalition", "clean,ghost-owner"]) == 2
    assert "ghost-owner not among the owners" in capsys.readouterr().err
    assert main(["whatif", "--report", str(tmp_path / "missing.json"), "--coalition", "clean"]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["whatif", "--report", str(path), "--coalition", "clean", "--game", "reward:x"]) == 2
    assert "no game 'reward:x'" in capsys.readouterr().err
    _, sampled = _report_file(tmp_path / "s" if (tmp_path / "s").mkdir() is None else tmp_path, "permutation")
    import json

    stored = {frozenset(r["members"]) for r in json.loads(sampled.read_text())["games"][0]["coalitions"]}
    missing = next(c for c in (frozenset(x) for x in (("clean", "small"), ("clean", "noisy"), ("small", "noisy"),
                                                      ("clean", "flipped"), ("small", "flipped"))) if c not in stored)
    assert main(["whatif", "--report", str(sampled), "--coalition", ",".join(sorted(missing))]) == 2
    assert "was not evaluated" in capsys.readouterr().err
