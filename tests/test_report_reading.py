"""A report that explains itself: the plain-words reading, units, no ± on exact values, rows
not used with their reasons, the named coalitions beside the heat map, a labelled values.png."""

from __future__ import annotations

import re

from server.report.html import render_html
from server.report.markdown import render_markdown
from server.report.schema import plain_reading, rows_account
from tests.test_report_html import Page, make_report


def _trimmed(report: dict) -> dict:
    """The first owner trained on 18 of its 61 rows; 2 of those were cut to max_length."""
    owner = report["owners"][0]
    owner.update(num_examples=18, dropped={"prompt_too_long": 40, "duplicate": 3}, metrics={"truncated_examples": 2})
    return report


def test_the_reading_states_levels_contributions_and_payout_in_plain_words() -> None:
    report = make_report()
    game = report["games"][0]
    text = plain_reading(report)
    assert text.startswith(f"Pooling all 4 valued owners {'raises' if game['grand'] > game['empty'] else 'lowers'} "
                           f"held-out preference accuracy from {100 * game['empty']:.1f}% (the base model) to "
                           f"{100 * game['grand']:.1f}%.")
    for name, value in game["values"].items():  # every owner's value, in points of accuracy
        assert f"{name} ({100 * value['value']:+.2f})" in text or f"{name} {100 * value['value']:+.2f}" in text
    gain = 100 * (game["grand"] - game["empty"])
    assert f"exact and add up to the {gain:+.2f}-point gain" in text
    assert "Values are in points of held-out preference accuracy." in text
    paid = {n: s for n, s in report["payout"]["shares"].items() if s > 0}
    assert all(f"{n} {s:.1%}" in text for n, s in paid.items()) and "(positive policy)" in text
    assert "Not valued: ghost" in text


def test_the_reading_says_when_values_are_estimated_or_in_another_unit() -> None:
    sampled = plain_reading(make_report(estimator="permutation"))
    assert "estimated (± one standard error where shown)" in sampled
    logsig = make_report(games=("preference-logsigmoid", "preference"))
    logsig["payout"]["game"] = "preference-logsigmoid"
    text = plain_reading(logsig)
    assert "nats" in text and "%" not in text.split(".")[0]


def test_rows_not_used_are_counted_with_their_reasons_everywhere() -> None:
    report = _trimmed(make_report())
    expected = ("used 18 of 61 rows; 43 dropped (the prompt alone fills max_length: 40, exact repeats: 3); "
                "2 truncated to max_length")
    assert rows_account(report["owners"][0]) == expected
    assert rows_account(report["owners"][1]) == ""
    md = render_markdown(report)
    assert f"- **clean**: {expected}" in md and "| clean | 18 of 61 |" in md
    page = render_html(report)
    assert expected in page and Page(page).payout()["rows"][0][2] == "18 of 61"
    assert f"Rows: clean {expected}." in plain_reading(report)


def test_exact_values_carry_units_and_no_plus_minus() -> None:
    md = render_markdown(make_report())
    table = [line for line in md.splitlines() if line.startswith("| clean |")]
    assert table and "±" not in table[0] and re.search(r"[+-]\d+\.\d\d pts", table[0])
    assert "preference: Shapley value (pts)" in md
    sampled = render_markdown(make_report(estimator="permutation"))
    assert re.search(r"\| clean \| 48 \| valued \| [+-]\d+\.\d\d ± \d+\.\d\d pts", sampled)


def test_the_page_opens_with_the_reading_and_names_every_coalition_of_the_heat_map() -> None:
    report = make_report()
    page = render_html(report)
    assert page.index('<p class="reading">') < page.index('<section id="payout">')
    assert plain_reading(report).split(". ")[0] in page
    (table,) = [t for t in Page(page).tables if t["class"] == "coalitions"]
    game = report["games"][0]
    assert len(table["rows"]) == len(game["coalitions"])
    shown = {row[0]: row[2] for row in table["rows"]}
    for coalition in game["coalitions"]:
        members = ", ".join(coalition["members"]) or "∅ (the base model)"
        assert shown[members] == f"{100 * coalition['value']:.1f}%"
    assert "<details><summary>Every listed coalition" in page and "<script" not in page


def test_values_png_is_labelled_with_units_values_legend_and_rejected_owners(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from server.report.figures import draw_values

    report = make_report()
    game = report["games"][0]
    fig, ax = plt.subplots()
    draw_values(ax, game, ["ghost"])
    labels = [t.get_text() for t in ax.texts]
    for value in game["values"].values():
        assert f"{100 * value['value']:+.1f}" in labels  # a number on every bar
    assert "rejected" in labels
    assert ax.get_ylabel() == "Shapley value (pts)" and ax.get_xlabel() == "owner"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["raises the utility", "lowers it",
                                                                    "rejected: not valued"]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "ghost"
    plt.close(fig)


def _audited(report: dict) -> dict:
    """``report`` with an audit block: two compared coalitions, one skipped for consent."""
    rows = [{"members": ["clean", "flipped"], "arithmetic": {"preference": 0.6, "preference-logsigmoid": -0.6},
             "retrained": {"preference": 0.2, "preference-logsigmoid": -0.9}},
            {"members": ["clean", "clean-small", "flipped"],
             "arithmetic": {"preference": 0.9, "preference-logsigmoid": -0.3},
             "retrained": {"preference": 0.8, "preference-logsigmoid": -0.35}}]
    for row in rows:
        row["error"] = {u: row["arithmetic"][u] - row["retrained"][u] for u in row["arithmetic"]}
    audit = {"requested": 3, "seed": 0, "order": "roster order within each coalition",
             "utilities": ["preference", "preference-logsigmoid"], "coalitions": rows,
             "skipped": [{"members": ["clean-small", "flipped"], "reason": "no consent from clean-small"}],
             "declined": {"clean-small": "its node config does not set allow-audit = true"},
             "agreement": {"preference": {"pearson": 1.0, "spearman": 1.0, "max_abs_error": 0.4,
                                          "mean_abs_error": 0.25},
                           "preference-logsigmoid": {"pearson": None, "spearman": None, "max_abs_error": 0.3,
                                                     "mean_abs_error": 0.175}},
             "fine_tunings": 2, "wall_s": 12.5}
    return {**report, "audit": audit}


def test_the_audit_is_told_in_words_in_a_numbered_table_and_a_scatter_plot(tmp_path) -> None:
    from server.report.schema import audit_summary
    from server.report.write import report_files, write_report

    report = _audited(make_report())
    summary = audit_summary(report["audit"])
    assert summary.startswith("The federation really retrained 2 coalition(s) by sequential DPO")
    assert "(2 fine-tunings, 12 s)" in summary and "Pearson 1.00" in summary and "largest error 0.4000" in summary
    assert "no correlation (fewer than two distinct points)" in summary  # a null is said, not drawn as 0
    assert "clean-small+flipped (no consent from clean-small)" in summary
    md = render_markdown(report)
    assert "| 1 | clean + flipped | 0.6000 | 0.2000 | +0.4000 | -0.6000 | -0.9000 | +0.3000 |" in md
    assert "- not retrained: **clean-small + flipped**: no consent from clean-small" in md
    page = Page(render_html(report))
    (table,) = [t for t in page.tables if t["class"] == "audit"]
    assert [row[:2] for row in table["rows"]] == [["1", "clean + flipped"], ["2", "clean + clean-small + flipped"]]
    assert "audit.png" in report_files(report) and "audit.png" not in report_files(make_report())
    write_report(report, tmp_path)
    assert (tmp_path / "audit.png").read_bytes()[:4] == b"\x89PNG"


def test_an_audit_that_compared_nothing_says_why() -> None:
    from server.report.schema import audit_summary

    nothing = {"requested": 2, "coalitions": [], "skipped": [{"members": ["a", "b"], "reason": "no consent from b"}]}
    assert audit_summary(nothing) == ("Audit of 2 coalition(s): no coalition was compared (all 1 chosen "
                                      "coalition(s) were skipped).")
    alone = {"requested": 2, "coalitions": [], "skipped": [], "note": "fewer than two owners were valued"}
    assert "fewer than two owners were valued" in audit_summary(alone)
    assert "## Audit" in render_markdown({**make_report(), "audit": nothing})


def test_the_python_report_types_the_audit() -> None:
    from common.trust.signing import REPORT_SCHEMA_VERSION
    from fairpool import AuditResult, Report

    versioned = {"schema_version": REPORT_SCHEMA_VERSION, **make_report()}
    plain = Report(versioned)
    assert plain.audit is None and plain.audit_dataframe().empty
    audited = Report(_audited(versioned))
    audit = audited.audit
    assert isinstance(audit, AuditResult) and audit.fine_tunings == 2 and audit.requested == 3
    assert [c.members for c in audit.coalitions] == [("clean", "flipped"), ("clean", "clean-small", "flipped")]
    assert audit.skipped == {("clean-small", "flipped"): "no consent from clean-small"}
    assert audit.agreement["preference-logsigmoid"]["pearson"] is None
    frame = audited.audit_dataframe()
    assert list(frame["coalition"]) == ["clean + flipped", "clean + clean-small + flipped"]
    assert frame.loc[0, "preference_error"] == 0.6 - 0.2
