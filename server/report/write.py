"""Writing a run's report: ``report.json`` (the contract), ``report.md``, ``report.html``
(self-contained, :mod:`server.report.html`), ``values.png`` and, with two or more games,
``signature.png``, and with an audit that compared coalitions, ``audit.png``.

Every file is written to a temporary name and renamed into place, and ``report.json`` goes
last: a reader that finds ``report.json`` finds a complete report.
"""

from __future__ import annotations

from pathlib import Path

from common.storage.atomic import atomic_write
from common.trust.signing import report_file_bytes
from server.report.html import render_html
from server.report.markdown import render_markdown
from server.report.schema import (
    AUDIT_PNG,
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    SIGNATURE_PNG,
    VALUES_PNG,
    has_audit_points,
)


def report_files(report: dict) -> tuple[str, ...]:
    """The names of the files :func:`write_report` writes for ``report``."""
    figures: tuple[str, ...] = (VALUES_PNG, SIGNATURE_PNG) if len(report["games"]) >= 2 else (VALUES_PNG,)
    if has_audit_points(report):
        figures += (AUDIT_PNG,)
    return (*figures, REPORT_MD, REPORT_HTML, REPORT_JSON)


def report_is_written(report: dict, out_dir: str | Path) -> bool:
    """``out_dir`` already holds ``report``: its ``report.json`` has these exact bytes and every
    other file of it exists (a replayed run then rewrites nothing, and renders no figure)."""
    out = Path(out_dir)
    try:
        same = (out / REPORT_JSON).read_bytes() == report_file_bytes(report)
    except OSError:
        return False
    return same and all((out / name).is_file() for name in report_files(report))


def write_report(report: dict, out_dir: str | Path, *, public: bool = False) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.json``.

    They are 0600 unless ``public`` (``--public-report``): the report lists every owner's share,
    and each owner fetches its own copy from ``fairpool serve`` or is sent it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from server.report.figures import render_audit, render_plot, render_signature  # matplotlib: only when drawing

    mode = PUBLIC_FILE_MODE if public else PRIVATE_FILE_MODE
    render_plot(report, out / VALUES_PNG, mode)
    if len(report["games"]) >= 2:
        render_signature(report, out / SIGNATURE_PNG, mode)
    if has_audit_points(report):
        render_audit(report, out / AUDIT_PNG, mode)
    atomic_write(out / REPORT_MD, render_markdown(report).encode("utf-8"), mode)
    atomic_write(out / REPORT_HTML, render_html(report).encode("utf-8"), mode)
    atomic_write(out / REPORT_JSON, report_file_bytes(report), mode)
    return out / REPORT_JSON
