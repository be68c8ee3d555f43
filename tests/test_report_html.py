"""``report.html``: one self-contained page per run, safe for any owner name.

Report dicts are built the coordinator's way (``play_game`` on a real preference game from a
synthetic margin matrix, ``payout_shares``) without training anything.  The page is checked by
parsing it (always) and, when Chromium is installed, by rendering it headless.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common.config.games import ValuationSettings
from common.valuation.payout import payout_shares
from common.valuation.preference_game import preference_game
from server.report.html import quantile_grid, render_html, trace_series, utilities_by_size
from server.report.schema import REPORT_HTML, REPORT_JSON, SIGNATURE_PNG
from server.report.write import write_report
from server.valuation.pipeline import play_game

XSS = "<script>alert(1)</script>"
ATTR_XSS = '"><img src=x onerror=alert(2)>'
MATHTEXT = r"$\bad$ owner"
"""Invalid mathtext: a figure that parsed it would raise in ``savefig``."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- report dicts


def _margins(n: int, pairs: int = 40, seed: int = 0) -> np.ndarray:
    """Owner ``i``'s margins lean right by ``0.5 - 0.3 i``: the last owners hurt."""
    rng = np.random.default_rng(seed)
    lean = 0.5 - 0.3 * np.arange(n)
    return lean[:, None] + rng.normal(0.0, 1.0, (n, pairs))


def _game(names, utility: str, metric: str, estimator: str, seed: int) -> dict:
    margins = _margins(len(names), seed=seed)
    game = preference_game(names, margins, metric, "sum", [48] * len(names), 0.1, key=f"t/{utility}")
    # a budget below 2ⁿ, or sampling estimators would enumerate (exact, stderr 0)
    settings = ValuationSettings(estimator=estimator, max_evaluations=(1 << len(names)) - 2)
    job = SimpleNamespace(run_id="t", valuation=settings, spec=SimpleNamespace(seed=seed), composition="sum")
    return play_game(job, utility, game, {"metric": metric, "num_eval_pairs": margins.shape[1]},
                     lambda *a, **k: None, examples=[48] * len(names))


def _trace(game: dict, snapshots: int = 8) -> list[dict]:
    """A deterministic trace that converges to the game's final values like 1/√k."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(1, snapshots + 1):
        noise = rng.normal(0.0, 0.05 / math.sqrt(k), len(game["values"]))
        out.append({"evaluations": 50 * k,
                    "values": {n: v["value"] + e for (n, v), e in zip(game["values"].items(), noise)},
                    "stderr": {n: 0.05 / math.sqrt(k) for n in game["values"]}})
    return out


def make_report(names=("clean", "small", "noisy", "flipped"), *, games=("preference",), estimator="exact",
                rejected=(("ghost", "no reply within 5s"),), trace=False, signature=None) -> dict:
    metrics = {"preference": "accuracy", "preference-logsigmoid": "logsigmoid"}
    played = [_game(list(names), u, metrics[u], estimator, seed=i) for i, u in enumerate(games)]
    if trace:
        for game in played:
            game["trace"] = _trace(game)
    payout = payout_shares({n: v["value"] for n, v in played[0]["values"].items()}, 100.0, "positive")
    owners = [{"name": n, "num_examples": 48, "adapter_sha256": f"{i:064x}", "status": "valued", "reason": None,
               "dropped": {}, "metrics": {}} for i, n in enumerate(names)]
    owners += [{"name": n, "num_examples": 0, "adapter_sha256": "", "status": "rejected", "reason": why,
                "dropped": {}, "metrics": {}} for n, why in rejected]
    report = {
        "run_id": "run-7",
        "owners": owners,
        "games": played,
        "payout": {"game": played[0]["utility"], "kind": str(payout.kind), "budget": payout.budget,
                   "policy": payout.policy,
                   "policy_description": payout.description, "shares": payout.shares, "amounts": payout.amounts,
                   "flagged": list(payout.flagged)},
        "settings": {"base_model": "/models/base", "base_fingerprint": "f" * 64, "spec": {},
                     "spec_sha256": "d" * 64, "composition": "sum", "eval_path": "/data/eval.jsonl"},
    }
    if signature:
        report["signature"] = signature
    return report


# --------------------------------------------------------------------------- parsing


class Page(HTMLParser):
    """What the tests look at: every tag with its attributes, table rows as cell texts, styles."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[dict] = []
        self.rejected_items: list[str] = []
        self.styles: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._head_row = False
        self._in_style = False
        self._in_rejected_li: list[str] | None = None
        self._rejected_list = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append({"class": attrs.get("class"), "head": [], "rows": []})
        elif tag == "tr":
            self._row, self._head_row = [], False
        elif tag in ("td", "th"):
            self._cell = []
            self._head_row |= tag == "th"
        elif tag == "style":
            self._in_style = True
        elif tag == "ul" and attrs.get("class") == "rejected":
            self._rejected_list = True
        elif tag == "li" and self._rejected_list:
            self._in_rejected_li = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["head" if self._head_row else "rows"].append(self._row)
            self._row = None
        elif tag == "style":
            self._in_style = False
        elif tag == "ul":
            self._rejected_list = False
        elif tag == "li" and self._in_rejected_li is not None:
            self.rejected_items.append("".join(self._in_rejected_li).strip())
            self._in_rejected_li = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.styles.append(data)
        if self._in_rejected_li is not None:
            self._in_rejected_li.append(data)

    def images(self) -> list[dict]:
        return [a for t, a in self.tags if t == "img"]

    def alts(self) -> list[str]:
        return [a.get("alt", "") for a in self.images()]

    def payout(self) -> dict:
        (table,) = [t for t in self.tables if t["class"] == "payout"]
        return table


@pytest.fixture(scope="module")
def two_games() -> dict:
    return make_report(games=("preference", "preference-logsigmoid"))


@pytest.fixture(scope="module")
def two_games_html(two_games) -> str:
    return render_html(two_games)


@pytest.fixture(scope="module")
def hostile() -> dict:
    """Owner names that would inject markup or break mathtext, one of them rejected."""
    return make_report(names=("clean", XSS, MATHTEXT), rejected=((ATTR_XSS, f"bad digest {XSS}"),),
                       signature={"fingerprint": "ab12<b>cd</b>"})


@pytest.fixture(scope="module")
def hostile_html(hostile) -> str:
    return render_html(hostile)


def test_payout_table_has_one_row_per_owner(two_games, two_games_html):
    table = Page(two_games_html).payout()
    assert table["head"] == [["owner", "status", "examples", "Shapley value (preference, pts)", "share",
                              "amount", "flagged"]], "exact values: no ± column, a unit"
    rows = {r[0]: r for r in table["rows"]}
    assert [r[0] for r in table["rows"]] == [o["name"] for o in two_games["owners"]]
    payout, values = two_games["payout"], two_games["games"][0]["values"]
    for name, value in values.items():
        status, examples, shown, share, amount, flag = rows[name][1:]
        assert status == "valued" and examples == "48"
        assert "±" not in shown and shown.endswith(" pts")  # exact: percentage points, no ±
        assert float(shown.removesuffix(" pts")) == pytest.approx(100 * value["value"], abs=5e-3)
        assert share == f"{payout['shares'][name]:.1%}" and amount == f"{payout['amounts'][name]:.2f}"
        assert ("negative" in flag) == (name in payout["flagged"])
    assert payout["flagged"] == ["flipped"], "the fixture's last owner hurts the model"
    assert rows["ghost"][1:] == ["rejected", "—", "—", "—", "—", ""]


def test_rejected_owners_are_listed_with_their_reason(two_games_html):
    assert Page(two_games_html).rejected_items == ["ghost: no reply within 5s"]


def test_sampled_values_show_their_stderr(tmp_path):
    report = make_report(estimator="permutation", rejected=())
    rows = Page(render_html(report)).payout()["rows"]
    for row in rows:
        stderr = report["games"][0]["values"][row[0]]["stderr"]
        assert stderr > 0 and row[3].endswith(f"± {100 * stderr:.2f} pts")
    assert "± stderr" in Page(render_html(report)).payout()["head"][0][3]


def test_page_is_self_contained(two_games_html):
    page = Page(two_games_html)
    images = page.images()
    assert len(images) == 2 * 2 + 1, "values and heat map per game, plus the signature"
    for img in images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base")
        for key, value in attrs.items():
            if key in ("src", "href", "srcset", "action", "poster", "data", "background"):
                assert value.startswith("data:"), f"<{tag} {key}={value[:40]}> loads a resource"
    assert "http://" not in two_games_html and "https://" not in two_games_html
    style = "".join(page.styles)
    assert style and "url(" not in style and "@import" not in style and "@font-face" not in style
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]


def test_header_names_the_run_settings_and_signature(hostile, hostile_html):
    text = Page(hostile_html)
    assert "run-7" in hostile_html and "f" * 64 in hostile_html and "d" * 64 in hostile_html
    assert "ab12&lt;b&gt;cd&lt;/b&gt;" in hostile_html, "the signature fingerprint is shown, escaped"
    assert not [t for t, _ in text.tags if t == "b"]
    unsigned = render_html(make_report(names=("a", "b"), rejected=()))
    assert 'class="signature"' not in unsigned


def test_owner_names_are_escaped(hostile, hostile_html):
    page = Page(hostile_html)
    assert not [t for t, _ in page.tags if t == "script"]
    assert all(a["src"].startswith("data:") and "onerror" not in a for a in page.images())
    for raw in (XSS, ATTR_XSS):
        assert raw not in hostile_html
    assert [r[0] for r in page.payout()["rows"]] == ["clean", XSS, MATHTEXT, ATTR_XSS], "names survive as text"
    assert page.rejected_items == [f"{ATTR_XSS}: bad digest {XSS}"]


def test_write_report_writes_the_page_before_report_json(hostile, tmp_path):
    """The mathtext owner name must not break any figure: ``report.json`` is still written."""
    write_report(hostile, tmp_path)
    html_path, json_path = tmp_path / REPORT_HTML, tmp_path / REPORT_JSON
    assert html_path.read_text(encoding="utf-8") == render_html(json.loads(json_path.read_text()))
    assert html_path.stat().st_mtime_ns <= json_path.stat().st_mtime_ns
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_signature_only_with_two_games(two_games_html, hostile_html):
    assert "data signature of each owner" in Page(two_games_html).alts()
    assert "data signature of each owner" not in Page(hostile_html).alts()


def test_page_and_signature_png_draw_the_same_figure(two_games, tmp_path):
    """One plotting path: the page embeds exactly the bytes of ``signature.png``."""
    write_report(two_games, tmp_path)
    page = Page((tmp_path / REPORT_HTML).read_text(encoding="utf-8"))
    (img,) = [a for a in page.images() if a["alt"] == "data signature of each owner"]
    assert base64.b64decode(img["src"].split(",", 1)[1]) == (tmp_path / SIGNATURE_PNG).read_bytes()


def test_heat_map_per_game(two_games, two_games_html):
    alts = Page(two_games_html).alts()
    for game in two_games["games"]:
        assert f"coalition utilities of the {game['utility']} game by size" in alts


def test_convergence_plot_only_with_a_trace():
    traced = make_report(names=("a", "b", "c", "d", "e"), estimator="permutation", rejected=())
    assert len(traced["games"][0]["trace"]) > 1  # recorded by the estimator itself, not made up here
    assert "trace" not in make_report(names=("a", "b", "c"), rejected=())["games"][0]
    alts = Page(render_html(traced)).alts()
    assert alts.count("convergence of the preference estimate") == 1
    del traced["games"][0]["trace"]
    assert not [a for a in Page(render_html(traced)).alts() if a.startswith("convergence")]


# --------------------------------------------------------------------------- pure helpers


def test_utilities_by_size_groups_every_coalition():
    game = make_report(names=("a", "b", "c", "d"), rejected=())["games"][0]
    rows = utilities_by_size(game)
    assert [len(r) for r in rows] == [1, 4, 6, 4, 1]
    assert rows[0] == [game["empty"]] and rows[4] == [game["grand"]]
    assert all(r == sorted(r) for r in rows)
    assert sorted(v for r in rows for v in r) == sorted(c["value"] for c in game["coalitions"])


def test_quantile_grid_shows_only_real_values():
    grid = quantile_grid([[0.5], [0.1, 0.2, 0.3, 0.9], [], [0.7, 0.8]])
    assert grid.shape == (4, 4)
    assert list(grid[0]) == [0.5] * 4 and list(grid[1]) == [0.1, 0.2, 0.3, 0.9]
    assert np.isnan(grid[2]).all() and list(grid[3]) == [0.7, 0.7, 0.8, 0.8]


def test_trace_series_reads_snapshots():
    game = {"values": {"a": {}, "b": {}},
            "trace": [{"evaluations": 10, "values": {"a": 1.0, "b": 2.0}},
                      {"evaluations": 20, "values": {"a": 1.5, "b": None}, "stderr": {"a": 0.1}}]}
    evaluations, values, stderr = trace_series(game)
    assert list(evaluations) == [10, 20] and list(values["a"]) == [1.0, 1.5]
    assert values["b"][0] == 2.0 and math.isnan(values["b"][1])
    assert stderr is None, "a band needs a stderr in every snapshot"


# --------------------------------------------------------------------------- a real browser


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    report = make_report(names=("clean", "small", XSS, "flipped"), games=("preference", "preference-logsigmoid"),
                         estimator="permutation", trace=True, signature={"fingerprint": "ab" * 20})
    path = tmp_path_factory.mktemp("html") / REPORT_HTML
    path.write_text(render_html(report), encoding="utf-8")
    return path


@needs_chromium
def test_browser_renders_a_page_with_charts(page_file):
    import matplotlib.image

    shot = page_file.with_name("shot.png")
    _chromium(f"--screenshot={shot}", "--window-size=1200,2400", page_file.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    colours = {tuple(p) for p in (pixels.reshape(-1, 3) * 255).astype(np.uint8)[::7].tolist()}
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert len(colours) > 200, "charts (viridis, error bars, text) make many distinct colours"
    assert non_white > 0.05


@needs_chromium
def test_browser_dom_has_the_payout_rows(page_file):
    dom = Page(_chromium("--dump-dom", page_file.as_uri()).stdout)
    names = [r[0] for r in dom.payout()["rows"]]
    assert names == ["clean", "small", XSS, "flipped", "ghost"]
    assert not [t for t, _ in dom.tags if t == "script"], "the owner name stayed text in the browser too"
    assert len(dom.images()) == 2 * 3 + 1
    # Issue 16 #5: the plain-words reading comes first; every game names its coalitions in a table
    assert [t for t, _ in dom.tags].index("p") < [t for t, _ in dom.tags].index("table")
    assert ("p", {"class": "reading"}) in dom.tags
    assert len([t for t in dom.tables if t["class"] == "coalitions"]) == 2


def test_flags_and_refused_replies_are_shown_escaped():
    report = make_report(rejected=())
    report["flags"] = [{"kind": "near_duplicate", "owners": ["clean", "small"], "cosine": 0.999,
                        "note": "possible copying"}]
    report["refused"] = [{"owner": "<mallory>", "reason": "unknown owner: not on this run's allowlist"}]
    page = render_html(report)
    assert "Flagged: near-identical adapters" in page and "clean and small" in page and "0.9990" in page
    assert "&lt;mallory&gt;" in page and "<mallory>" not in page
    from server.report.markdown import render_markdown

    md = render_markdown(report)
    assert "clean and small" in md and "unknown owner" in md
