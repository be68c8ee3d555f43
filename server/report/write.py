"""Writing a run's report: ``report.json`` (the contract), ``report.md``, ``report.html``
(self-contained, :mod:`server.report.html`), ``values.png`` and, with two or more games,
``signature.png``.

Every file is written to a temporary name and renamed into place, and ``report.json`` goes
last: a reader that finds ``report.json`` finds a complete report.
"""

from __future__ import annotations

from pathlib import Path

from common.storage.atomic import atomic_write
from common.trust.signing import report_file_bytes
from server.report.figures import render_plot, render_signature
from server.report.html import render_html
from server.report.markdown import render_markdown
from server.report.schema import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    SIGNATURE_PNG,
    VALUES_PNG,
)


def write_report(report: dict, out_dir: str | Path, *, public: bool = False) -> Path:
    """Write the report files into ``out_dir``; return the path of ``report.json``.

    They are 0600 unless ``public`` (``--public-report``): the report lists every owner's share,
    and each owner fetches its own copy from ``fairpool serve`` or is sent it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mode = PUBLIC_FILE_MODE if public else PRIVATE_FILE_MODE
    render_plot(report, out / VALUES_PNG, mode)
    if len(report["games"]) >= 2:
        render_signature(report, out / SIGNATURE_PNG, mode)
    atomic_write(out / REPORT_MD, render_markdown(report).encode("utf-8"), mode)
    atomic_write(out / REPORT_HTML, render_html(report).encode("utf-8"), mode)
    atomic_write(out / REPORT_JSON, report_file_bytes(report), mode)
    return out / REPORT_JSON
