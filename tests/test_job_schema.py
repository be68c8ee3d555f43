"""``job.json`` and ``report.json`` carry a schema version (issue 13); another version is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from common.config.games import ValuationSettings
from common.config.job import JOB_SCHEMA_VERSION, OwnerEntry, ValuationJob
from common.errors import ConfigError
from common.trust.signing import REPORT_SCHEMA_VERSION, SignatureError, generate_private_key, sign_report, verify_report
from tests.test_signing import sample_report


def _job(tmp_path, fast_spec, **kw) -> ValuationJob:
    return ValuationJob(run_id="r", owners=(OwnerEntry("a", "a.jsonl"), OwnerEntry("b", "b.jsonl")),
                        eval_path="eval.jsonl", out_dir=str(tmp_path), spec=fast_spec, **kw)


def test_a_job_file_round_trips_with_its_version(tmp_path, fast_spec):
    job = _job(tmp_path, fast_spec)
    path = job.save(tmp_path / "job.json")
    assert json.loads(path.read_text())["schema_version"] == JOB_SCHEMA_VERSION
    assert ValuationJob.load(path).to_json() == job.to_json()


@pytest.mark.parametrize("version", [None, 0, JOB_SCHEMA_VERSION + 1, "1"])
def test_a_job_of_another_version_is_refused_in_one_line(tmp_path, fast_spec, version):
    raw = json.loads(_job(tmp_path, fast_spec).to_json())
    if version is None:
        del raw["schema_version"]
    else:
        raw["schema_version"] = version
    path = tmp_path / "job.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        ValuationJob.load(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and f"this FairPool reads version {JOB_SCHEMA_VERSION}" in message
    assert str(path) in message


def test_a_banzhaf_payout_is_refused_before_any_work_unless_normalised(tmp_path, fast_spec):
    settings = ValuationSettings(estimator="banzhaf")
    with pytest.raises(ConfigError, match="banzhaf values are not Shapley values"):
        _job(tmp_path, fast_spec, valuation=settings, payout_policy="positive")
    with pytest.raises(ConfigError, match="loo values are not Shapley values"):
        _job(tmp_path, fast_spec, valuation=dataclasses.replace(settings, estimator="loo"), payout_policy="signed")
    assert _job(tmp_path, fast_spec, valuation=settings, payout_policy="normalised").payout_policy == "normalised"
    assert _job(tmp_path, fast_spec, valuation=settings).payout_policy == "robust"  # the default normalises
    assert _job(tmp_path, fast_spec, valuation=ValuationSettings(estimator="kernel")).payout_policy == "robust"


def test_a_signed_report_of_another_version_is_refused():
    key = generate_private_key()
    report = sample_report()
    assert report["schema_version"] == REPORT_SCHEMA_VERSION
    verify_report(sign_report(report, key), key.public_key())
    for version in (None, 1, REPORT_SCHEMA_VERSION + 1):
        old = {k: v for k, v in report.items() if k != "schema_version"}
        if version is not None:
            old["schema_version"] = version
        with pytest.raises(SignatureError, match=f"this FairPool reads version {REPORT_SCHEMA_VERSION}"):
            verify_report(sign_report(old, key), key.public_key())
