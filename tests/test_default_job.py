"""The embedded default federation as a job (common/embedded/default_job.py): the spec bound to the
base model's weights, the default and objectives markets, keys for a simulated run, and the rules
by which re-running a command resumes its run.

``FAIRPOOL_HOME`` points at a fresh folder whose ``base-models`` links to the session's cached
build, so markets and runs are written there and nothing is trained.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import stat
from pathlib import Path

import pytest

from common.config.job import JOB_FILE, OwnerEntry, ValuationJob
from common.embedded.default_job import (
    default_job,
    default_market_dir,
    new_run_id,
    resume_or_start,
    spec_for,
    with_trust_material,
)
from common.errors import ConfigError

DEFAULT_OWNERS = ["clean", "clean-small", "noisy", "flipped", "duplicate"]
OBJECTIVES_OWNERS = ["helpful-only", "harmless-only", "complier", "noisy"]


@pytest.fixture
def home(tmp_path, monkeypatch, base_model_dir):
    """A fresh FAIRPOOL_HOME that shares the session's built base model."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "base-models").symlink_to(Path(base_model_dir).parent, target_is_directory=True)
    monkeypatch.setenv("FAIRPOOL_HOME", str(root))
    return root.resolve()


def test_run_ids_are_short_random_hex():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


def test_the_spec_is_bound_to_the_weights_not_the_path(base_model_dir, tmp_path, monkeypatch):
    spec = spec_for(str(base_model_dir))
    assert spec.base_model == str(Path(base_model_dir).resolve()) and re.fullmatch(r"[0-9a-f]{64}", spec.base_fingerprint)
    monkeypatch.chdir(Path(base_model_dir).parent)  # a relative path becomes absolute (the spec travels)
    assert spec_for(Path(base_model_dir).name) == spec
    copy = tmp_path / "copy"
    shutil.copytree(base_model_dir, copy)
    copied = spec_for(str(copy))
    assert copied.base_model == str(copy.resolve()) and copied.base_fingerprint == spec.base_fingerprint
    weights = next(p for p in copy.iterdir() if p.suffix in (".safetensors", ".bin"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert spec_for(str(copy)).base_fingerprint != spec.base_fingerprint
    tuned = spec_for(str(base_model_dir), epochs=2.0, seed=7, lora_r=4)
    assert (tuned.epochs, tuned.seed, tuned.lora_r) == (2.0, 7, 4)
    assert tuned.base_fingerprint == spec.base_fingerprint


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        spec_for(str(tmp_path))


def test_markets_live_under_the_home(home):
    assert default_market_dir(3) == home / "markets" / "default-seed3"
    assert default_market_dir(0, "objectives") == home / "markets" / "objectives-seed0"


def test_the_default_job_is_the_embedded_market(home, base_model_dir, tmp_path):
    from common.data import load_preferences
    from common.embedded.market import make_market

    job = default_job(seed=0, budget=5.0, min_owners=2)
    root = home / "markets" / "default-seed0"
    assert [o.name for o in job.owners] == DEFAULT_OWNERS
    assert [Path(o.data) for o in job.owners] == [root / "owners" / f"{n}.jsonl" for n in DEFAULT_OWNERS]
    assert Path(job.eval_path) == root / "eval.jsonl"
    assert job.out_dir == str(home / "runs" / job.run_id) and re.fullmatch(r"[0-9a-f]{12}", job.run_id)
    assert job.embedded_market and job.simulated and (job.budget, job.min_owners) == (5.0, 2)
    assert job.spec == spec_for(str(base_model_dir), seed=0)
    assert not any(o.public_key or o.signing_key for o in job.owners), "keys come from with_trust_material"
    # the files are the seeded market itself: an independent build with the same seed is identical
    fresh = make_market(tmp_path / "fresh", seed=0)
    for owner in job.owners:
        assert Path(owner.data).read_bytes() == fresh.owners[owner.name].read_bytes(), owner.name
    assert Path(job.eval_path).read_bytes() == fresh.eval_path.read_bytes()
    examples, _ = load_preferences(job.eval_path)
    assert len(examples) == 200


def test_default_jobs_differ_by_run_id_only_until_the_seed_changes(home, tmp_path):
    out = tmp_path / "out"
    first, second = default_job(out), default_job(out)
    assert first.run_id != second.run_id and first.same_work_as(second) and first.out_dir == str(out)
    other_seed = default_job(out, seed=1)
    assert Path(other_seed.eval_path).parent == home / "markets" / "default-seed1"
    assert other_seed.spec.seed == 1 and not first.same_work_as(other_seed)
    assert Path(other_seed.owners[0].data).read_bytes() != Path(first.owners[0].data).read_bytes()


def test_the_objectives_job(home):
    job = default_job(objectives=True)
    root = home / "markets" / "objectives-seed0"
    assert [o.name for o in job.owners] == OBJECTIVES_OWNERS
    assert all(Path(o.data).parent == root / "owners" and Path(o.data).is_file() for o in job.owners)
    assert Path(job.eval_path).parent == root and job.embedded_market


# --------------------------------------------------------------------------- keys for a simulated run


def _small_job(tmp_path, fast_spec, **kw) -> ValuationJob:
    return ValuationJob("run-1", (OwnerEntry("ann", "ann.jsonl"), OwnerEntry("bob", "bob.jsonl")), "eval.jsonl",
                        str(tmp_path / "out"), fast_spec, **kw)


def test_trust_material_is_created_once_and_reused(tmp_path, fast_spec):
    from common.trust.signing import SubmissionClaim, load_private_key, load_public_key, sign_claim, verify_claim

    job = _small_job(tmp_path, fast_spec)
    keyed = with_trust_material(job)
    keys = Path(job.out_dir) / "keys"
    assert keyed.coordinator_key == str(keys / "coordinator.key") and keyed.storage_key == str(keys / "storage.key")
    for owner in keyed.owners:
        assert owner.signing_key == str(keys / "owners" / f"{owner.name}.key")
        # the allowlisted public key is the one of the owner's private key: a claim it signs verifies
        claim = SubmissionClaim("run-1", "nonce", owner.name, "0" * 64, 3, "spec")
        signature = sign_claim(load_private_key(owner.signing_key), claim)
        assert verify_claim(load_public_key(owner.public_key), claim, signature)
        other = next(o for o in keyed.owners if o.name != owner.name)
        assert not verify_claim(load_public_key(other.public_key), claim, signature)
    assert keyed.requires_signatures
    for path in (Path(keyed.coordinator_key), Path(keyed.storage_key), *(Path(o.signing_key) for o in keyed.owners)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (keys, keys / "owners"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    storage = Path(keyed.storage_key).read_bytes()
    again = with_trust_material(job)  # re-running the command keeps the same identities
    assert again == keyed and Path(again.storage_key).read_bytes() == storage
    assert keyed.same_work_as(again)


def test_given_keys_and_deployed_owners_are_used_as_they_are(tmp_path, fast_spec):
    from common.trust.sealing import generate_storage_key

    mine = generate_storage_key(tmp_path / "mine" / "storage.key")
    deployed = _small_job(tmp_path, fast_spec, simulated=False)
    keyed = with_trust_material(deployed, coordinator_key=tmp_path / "coord.key", storage_key=mine)
    assert keyed.owners == deployed.owners, "a deployment's owners keep their own keys on their machines"
    assert keyed.coordinator_key == str(tmp_path / "coord.key") and keyed.storage_key == str(mine)
    assert not (Path(deployed.out_dir) / "keys" / "storage.key").exists()
    assert not (Path(deployed.out_dir) / "keys" / "owners").exists()


# --------------------------------------------------------------------------- resume_or_start


def test_a_fresh_output_starts_a_new_run(tmp_path, fast_spec):
    job = _small_job(tmp_path, fast_spec)
    assert resume_or_start(job) == (job, False)


def test_the_same_job_resumes_under_its_earlier_run_id(tmp_path, fast_spec):
    job = _small_job(tmp_path, fast_spec)
    job.save(Path(job.out_dir) / JOB_FILE)
    rerun = dataclasses.replace(job, run_id="run-2")
    assert resume_or_start(rerun) == (job, True)
    # where the keys are kept is not part of the work
    moved_keys = dataclasses.replace(rerun, coordinator_key="/elsewhere/c.key", storage_key="/elsewhere/s.key")
    resumed, is_resume = resume_or_start(moved_keys)
    assert is_resume and resumed == dataclasses.replace(moved_keys, run_id="run-1")
    # a finished run with the same job is replayed (its report comes from the ledger), not restarted
    (Path(job.out_dir) / "report.json").write_text(json.dumps({"run_id": "run-1"}))
    assert resume_or_start(rerun) == (job, True)


def _refused(job, report_text):
    job.save(Path(job.out_dir) / JOB_FILE)
    if report_text is not None:
        (Path(job.out_dir) / "report.json").write_text(report_text)
    different = dataclasses.replace(job, run_id="run-2", budget=7.0)
    with pytest.raises(ConfigError) as caught:
        resume_or_start(different)
    assert str(caught.value) == (f"{job.out_dir} holds unfinished run run-1 of a different job; re-run that command "
                                 "to resume it, or choose another `out_dir`")


@pytest.mark.parametrize("report", [None, '{"run_id": "someone-else"}', "{not json", ""])
def test_a_different_job_is_refused_while_the_earlier_run_is_unfinished(report, tmp_path, fast_spec):
    """No report, another run's report, or an unreadable one: the run in OUT has not finished."""
    _refused(_small_job(tmp_path, fast_spec), report)


@pytest.mark.parametrize("report", ["null", '["run-1"]', '"run-1"'])
def test_a_report_that_is_not_a_json_object_counts_as_unfinished(report, tmp_path, fast_spec):
    _refused(_small_job(tmp_path, fast_spec), report)


def test_a_different_job_may_start_once_the_earlier_run_finished(tmp_path, fast_spec):
    job = _small_job(tmp_path, fast_spec)
    job.save(Path(job.out_dir) / JOB_FILE)
    (Path(job.out_dir) / "report.json").write_text(json.dumps({"run_id": "run-1", "games": []}))
    different = dataclasses.replace(job, run_id="run-2", composition="mean")
    assert resume_or_start(different) == (different, False)


def test_an_unreadable_job_file_is_a_config_error(tmp_path, fast_spec):
    job = _small_job(tmp_path, fast_spec)
    Path(job.out_dir).mkdir(parents=True)
    (Path(job.out_dir) / JOB_FILE).write_text("{truncated")
    with pytest.raises(ConfigError, match=f"cannot read job file {re.escape(str(Path(job.out_dir) / JOB_FILE))}"):
        resume_or_start(job)
