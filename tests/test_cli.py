"""The CLI contract for bad input: non-zero exit, one clear message (file, line, problem),
and nothing written. These fail before any Flower process starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli.main import main

GOOD = '{"prompt": "Describe the park.", "chosen": " It is calm.", "rejected": " It is noisy."}\n'


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(GOOD * 3)
    return tmp_path, good


def _value(args, out, capsys):
    code = main(["value", *args, "--out", str(out)])
    return code, capsys.readouterr().err


CASES = {
    "missing_file": (None, "no such file"),
    "missing_rejected": ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n',
                         ":2: field 'rejected': missing"),
    "not_json": (GOOD + GOOD + "{not json\n", ":3:"),
    "empty": ("", "empty"),
    "identical": ('{"prompt": "p", "chosen": "same", "rejected": "same"}\n', "chosen_equals_rejected: 1 (line 1)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_owner_file_gives_one_clear_error_and_no_report(case, files, capsys):
    tmp, good = files
    content, expected = CASES[case]
    bad = tmp / f"{case}.jsonl"
    if content is not None:
        bad.write_text(content)
    out = tmp / "out"
    code, err = _value(["--owner", f"a={good}", "--owner", f"b={bad}", "--eval", str(good)], out, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{case}.jsonl" in lines[0] and expected in lines[0]
    assert not (out / "report.json").exists() and not out.exists()


def test_a_file_of_only_unusable_rows_is_named_with_the_reasons(files, capsys):
    tmp, good = files
    bad = tmp / "same.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "x", "rejected": "x"}\n{"prompt": "p", "chosen": " ", "rejected": "y"}\n')
    code, err = _value(["--owner", f"a={bad}", "--eval", str(good)], tmp / "out", capsys)
    assert code == 2 and "same.jsonl" in err and "no usable examples" in err
    assert "chosen_equals_rejected: 1 (line 1)" in err and "empty_field: 1 (line 2)" in err


def test_bad_eval_file_is_reported(files, capsys):
    tmp, good = files
    bad = tmp / "eval.jsonl"
    bad.write_text(GOOD + "[1, 2]\n")
    code, err = _value(["--owner", f"a={good}", "--eval", str(bad)], tmp / "out", capsys)
    assert code == 2 and "eval.jsonl:2" in err


@pytest.mark.parametrize("owner, expected", [("noequals", "expected NAME=PATH"), ("=x", "expected NAME=PATH")])
def test_malformed_owner_argument(owner, expected, files, capsys):
    tmp, good = files
    code, err = _value(["--owner", owner, "--eval", str(good)], tmp / "out", capsys)
    assert code == 2 and expected in err


def test_owner_named_twice(files, capsys):
    tmp, good = files
    code, err = _value(["--owner", f"a={good}", "--owner", f"a={good}", "--eval", str(good)], tmp / "out", capsys)
    assert code == 2 and "named twice" in err


@pytest.mark.parametrize("extra, message", [
    # an unknown option is left over after parsing: argparse's top-level parser reports it
    (["--frobnicate"], "fairpool: error: unrecognized arguments: --frobnicate"),
    # a value outside an option's choices is refused by the `value` subparser that owns the option
    (["--composition", "product"],
     "fairpool value: error: argument --composition: invalid choice: 'product' (choose from 'sum', 'mean', 'size')"),
])
def test_unknown_option_and_bad_choice_exit_non_zero(extra, message, files):
    tmp, good = files
    proc = subprocess.run([sys.executable, "-m", "server.cli.main", "value", "--owner", f"a={good}", "--eval",
                           str(good), "--out", str(tmp / "o"), *extra], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == message
    assert not (tmp / "o").exists()


def test_market_make_writes_loadable_files(tmp_path, capsys):
    from common.data import load_preferences

    assert main(["market", "make", "--out", str(tmp_path), "--scale", "8", "--eval-size", "5"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert set(printed) == {"clean", "clean-small", "noisy", "flipped", "duplicate", "eval"}
    assert len(load_preferences(Path(printed["eval"]))[0]) == 5
    manifest = json.loads((tmp_path / "market.json").read_text())
    assert manifest["seed"] == 0


def test_valuation_options_reach_the_job(files):
    from server.cli.main import build_parser, job_options

    tmp, good = files
    args = build_parser().parse_args(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(tmp / "o"),
                                      "--utility", "preference", "--utility", "preference-logsigmoid",
                                      "--estimator", "kernel", "--max-evaluations", "500", "--tolerance", "0.01",
                                      "--rank-stable-for", "7",
                                      "--payout-game", "preference-logsigmoid"])
    valuation = job_options(args)["valuation"]
    assert valuation.utilities == ("preference", "preference-logsigmoid")
    assert valuation.estimator == "kernel" and valuation.payout_utility == "preference-logsigmoid"
    rule = repr(valuation.stopping_rule(3))
    assert "MaxEvaluations(500)" in rule and "0.01" in rule and "RankStableFor(7)" in rule


def test_payout_game_must_be_a_played_game(files, capsys):
    tmp, good = files
    code, err = _value(["--owner", f"a={good}", "--eval", str(good), "--payout-game", "preference-logsigmoid"],
                       tmp / "out", capsys)
    assert code == 2 and "not one of the utilities" in err and not (tmp / "out").exists()


NAME_RULE = ("an owner name has 1–64 letters, digits or _ . + @ - (starting with a letter, digit or _), "
             "no spaces, separators or control characters")


@pytest.mark.parametrize("name, shown", [("../../x", "'../../x'"), ("x" * 300, repr("x" * 77) + "…"),
                                         ("new\nline", "'new\\nline'"), ("zero\u200bwidth", "'zero\\u200bwidth'"),
                                         ("a b", "'a b'"), (".hidden", "'.hidden'")])
def test_unsafe_owner_names_are_refused_before_anything_is_written(name, shown, files, capsys):
    """Issue 12 #10: such names failed after ~19 s with keys already written, or broke the table."""
    tmp, good = files
    code, err = _value(["--owner", f"{name}={good}", "--eval", str(good)], tmp / "out", capsys)
    # check_owner_name shows the name as repr (cut to 77 characters and … past 80), then the rule
    assert code == 2 and err == f"error: --owner {shown}: {NAME_RULE}\n"
    assert not (tmp / "out").exists()


def test_an_empty_owner_name_is_a_malformed_argument(files, capsys):
    """``=PATH`` fails the NAME=PATH split (an empty name) before any name rule is applied."""
    tmp, good = files
    code, err = _value(["--owner", f"={good}", "--eval", str(good)], tmp / "out", capsys)
    assert code == 2 and err == f"error: --owner '={good}': expected NAME=PATH\n"
    assert not (tmp / "out").exists()


def test_safe_owner_names_pass():
    from common.config.job import check_owner_name

    for name in ("acme", "clean-small", "org_2", "ünïcode", "a.b+c@d", "x" * 64):
        assert check_owner_name(name) == name


@pytest.mark.parametrize("tail, problem", [
    (["--timeout", "-1"], "--timeout must be a finite number of seconds > 0"),
    (["--timeout", "nan"], "--timeout must be a finite number of seconds > 0"),
    (["--min-owners", "0"], "--min-owners must be at least 1"),
    (["--min-owners", "10"], "--min-owners must be between 1 and the number of owners (1)"),
    (["--learning-rate", "1e30"], "far above any usable value"),
])
def test_out_of_range_options_are_refused_before_any_work(tail, problem, files, capsys):
    tmp, good = files
    code, err = _value(["--owner", f"a={good}", "--eval", str(good), *tail], tmp / "out", capsys)
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
    assert not (tmp / "out").exists()


# --------------------------------------------------------------------------- one source of truth (issue 13, item 4)

ROOT = Path(__file__).resolve().parents[1]


def _value_parser():
    from server.cli.main import build_parser

    return build_parser()._subparsers._group_actions[0].choices["value"]  # noqa: SLF001 - argparse has no getter


def test_docs_list_the_valuation_settings_with_their_real_defaults():
    from common.config.games import ValuationSettings
    from common.config.options import markdown_table

    doc = (ROOT / "docs" / "cli.md").read_text()
    assert markdown_table(ValuationSettings) in doc, \
        f"docs/cli.md is out of date; paste:\n{markdown_table(ValuationSettings)}"


def test_docs_list_every_valuation_option():
    doc = (ROOT / "docs" / "cli.md").read_text()
    flags = [s for a in _value_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert len(flags) > 40
    missing = [flag for flag in flags if f"`{flag}" not in doc]
    assert not missing, f"docs/cli.md does not document {missing}"


def _doc_defaults() -> dict[str, str]:
    """``--flag`` → the default cell of the `fairpool value` table rows in docs/cli.md."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    rows = {}
    for line in doc.split("## `fairpool value`")[1].split("###")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`--"):
            rows[cells[0].strip("`").split()[0]] = cells[1].strip("`")
    return rows


def test_hand_written_valuation_options_take_and_document_the_owners_defaults():
    """Options that are not ValuationSettings fields: defaults from ValuationJob, AdapterLimits, TrainingSpec."""
    from common.config.job import ValuationJob
    from common.config.options import field_default
    from common.config.spec import TrainingSpec
    from common.trust.adapter_checks import AdapterLimits

    limits = AdapterLimits()
    owned = {"--composition": field_default(ValuationJob, "composition"),
             "--payout-policy": field_default(ValuationJob, "payout_policy"),
             "--budget": field_default(ValuationJob, "budget"),
             "--min-owners": field_default(ValuationJob, "min_owners"),
             "--timeout": field_default(ValuationJob, "owner_timeout_s"),
             "--seed": field_default(TrainingSpec, "seed"),
             "--max-adapter-norm": limits.max_norm, "--max-adapter-mb": limits.max_megabytes,
             "--duplicate-cosine": limits.duplicate_cosine}
    documented = _doc_defaults()
    actions = {s: a for a in _value_parser()._actions for s in a.option_strings}
    for flag, default in owned.items():
        shown = f"{default:g}" if isinstance(default, (int, float)) else default
        assert documented[flag] == shown, f"docs/cli.md: {flag} defaults to {shown}, not {documented[flag]}"
        assert f"default: {shown}" in actions[flag].help or f"default {shown}" in actions[flag].help, flag
        if actions[flag].default is not None:  # the adapter limits stay None: "not given" keeps AdapterLimits'
            assert actions[flag].default == default, flag


def test_no_valuation_option_means_the_dataclass_defaults(files):
    import inspect

    from common.config.games import ValuationSettings
    from common.valuation.estimators import EXACT_MAX_PLAYERS, estimate
    from server.cli.main import build_parser, job_options

    tmp, good = files
    args = build_parser().parse_args(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(tmp / "o")])
    options = job_options(args)
    assert options["valuation"] == ValuationSettings()
    assert inspect.signature(estimate).parameters["exact_max_players"].default == EXACT_MAX_PLAYERS
    assert options["valuation"].exact_max_players == EXACT_MAX_PLAYERS == 20  # one default, shared with estimate()


def test_repeatable_and_pair_valuation_options_become_tuples_and_dicts(files):
    from common.config.games import ValuationSettings
    from common.config.options import chosen_options
    from server.cli.main import build_parser

    tmp, good = files
    args = build_parser().parse_args(["value", "--owner", f"a={good}", "--eval", str(good), "--out", str(tmp / "o"),
                                      "--utility", "reward:mine", "--utility", "preference",
                                      "--scorer", "mine=pkg.mod:score", "--reward-model", f"rm={tmp}",
                                      "--eval-prompts", str(good)])
    chosen = chosen_options(args, ValuationSettings)
    assert chosen == {"utilities": ("reward:mine", "preference"), "scorers": {"mine": "pkg.mod:score"},
                      "reward_models": {"rm": str(tmp.resolve())}, "eval_prompts": str(good.resolve())}


@pytest.mark.parametrize("extra, message", [
    (["--reward-model", "bad"], "error: --reward-model 'bad': expected NAME=DIR"),
    (["--scorer", "a=m:f", "--scorer", "a=n:g"], "error: --scorer a: named twice"),
    (["--reward-model", "rm=/no/such/dir"], "error: --reward-model rm: /no/such/dir: no such file or directory"),
    (["--eval-prompts", "/no/such/file"], "error: --eval-prompts /no/such/file: no such file or directory"),
    (["--utility", "nonsense"], "error: unknown utility 'nonsense'"),
])
def test_bad_valuation_options_are_one_line_and_exit_2(extra, message, files, capsys):
    tmp, good = files
    code, err = _value(["--owner", f"a={good}", "--eval", str(good), *extra], tmp / "out", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert not (tmp / "out").exists()


def test_a_bad_estimator_is_refused_by_the_parser(files):
    tmp, good = files
    proc = subprocess.run([sys.executable, "-m", "server.cli.main", "value", "--owner", f"a={good}", "--eval",
                           str(good), "--out", str(tmp / "o"), "--estimator", "magic"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "fairpool value: error: argument --estimator: invalid choice: 'magic' (choose from 'auto', 'exact',")


OFFLINE_KEYS = ("HF_HUB_OFFLINE", "FLWR_DISABLE_UPDATE_CHECK", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION",
                "TOKENIZERS_PARALLELISM")


def _fresh_python(code: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_KEYS}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_cli_leaves_the_environment_unchanged():
    changed = _fresh_python("import json, os; before = dict(os.environ); import server.cli.main; "
                            "after = dict(os.environ); "
                            "print(json.dumps({k: after.get(k) for k in set(before) | set(after) "
                            "if before.get(k) != after.get(k)}))")
    assert changed == {}


def test_the_cli_sets_its_offline_environment_when_it_runs():
    env = _fresh_python("import json, os\nfrom server.cli.main import main\ntry:\n    main(['--help'])\n"
                        "except SystemExit:\n    pass\nprint(json.dumps({k: os.environ.get(k) for k in "
                        f"{OFFLINE_KEYS!r}}}))")
    assert env == {"HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
                   "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_fairpool_flwr_runs_flower_with_this_environments_executables_first_on_path(monkeypatch, tmp_path):
    """Issue 14 #2: Flower's `flwr` starts `flower-superlink` by name; `fairpool flwr ...` puts
    this interpreter's scripts first on PATH, so `flwr run .` works without activating the venv."""
    import os

    from server.cli import main as cli

    seen = {}
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(os, "execve", lambda path, args, env: seen.update(path=path, args=args, env=env))
    cli.main(["flwr", "run", ".", "local", "--stream"])
    bin_dir = str(Path(sys.executable).parent)
    assert seen["args"][1:] == ["run", ".", "local", "--stream"], "flwr's own options pass untouched"
    assert seen["env"]["PATH"].split(os.pathsep)[0] == bin_dir
    assert Path(seen["path"]).parent == Path(bin_dir) and (Path(bin_dir) / "flower-superlink").exists()
    real = subprocess.run([str(Path(bin_dir) / "fairpool"), "flwr", "--version"], capture_output=True, text=True,
                          env={**os.environ, "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert real.returncode == 0 and "Flower version" in real.stdout
