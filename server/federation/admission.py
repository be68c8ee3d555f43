"""Admitting owners' replies: identity, freshness, signature, adapter checks — and durable storage.

Every reply goes through :meth:`Admission.admit` exactly once, in this order, and the first
failing check is the recorded reason:

1. the owner replied with an error (training failed, bad data on its side);
2. the owner is on the run's allowlist;
3. the reply is signed (when the allowlist holds keys) and answers *this* request: its nonce
   is the one sent to that node, issued by this run and not used before (else: replay);
4. it was trained under this run's training spec (spec digest);
5. the digest the owner signed is the digest of the tensors received;
6. the signature verifies with the owner's registered key over (run id, nonce, owner,
   digest, number of examples, spec digest);
7. the adapter itself is valid (:func:`common.trust.adapter_checks.adapter_problem`).

Accepted adapters are sealed with the storage key and stored with the reply in one ledger
transaction, so a coordinator killed a moment later still has them: a re-run values them
without asking the owner to train again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from common.config.job import ValuationJob
from common.errors import FairPoolError
from common.status import SubmissionStatus
from common.trust import faults
from common.trust.sealing import load_storage_key, seal, tensors_from_bytes, tensors_to_bytes, unseal
from common.trust.signing import SubmissionClaim, load_public_key, verify_claim
from server.federation.ledger import Ledger
from server.valuation.pipeline import Submission, rejection_reason


def sealing_context(run_id: str, owner: str, digest: str) -> str:
    """Associated data of a sealed adapter: binds the blob to its run, owner and digest."""
    return f"fairpool-adapter-v1/{run_id}/{owner}/{digest}"


def ledger_meta(sub: Submission) -> dict[str, object]:
    """What the ledger keeps of a submission beside its sealed tensors (read back by
    :func:`submission_from_ledger`: the two name the same keys, here only)."""
    return {"nonce": sub.nonce, "adapter_sha256": sub.digest, "signature": sub.signature,
            "num_examples": int(sub.num_examples), "dropped": dict(sub.dropped),
            "metrics": {k: float(v) for k, v in sub.metrics.items()}, "run_id": sub.run_id,
            "spec_sha256": sub.spec_sha256, "source": sub.source}


def submission_from_ledger(owner: str, digest: str, tensors: Mapping[str, np.ndarray],
                           meta: Mapping[str, object]) -> Submission:
    """A stored submission as it was admitted (:func:`ledger_meta`), its tensors as float32."""
    def text(key: str) -> str:
        return str(meta.get(key) or "")

    dropped = meta.get("dropped", {})
    metrics = meta.get("metrics", {})
    return Submission(owner, tensors={k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()},
                      num_examples=int(str(meta.get("num_examples", 0))), claimed_sha256=digest,
                      dropped={str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, dict) else {},
                      metrics=dict(metrics) if isinstance(metrics, dict) else {}, nonce=text("nonce"),
                      run_id=text("run_id"), spec_sha256=text("spec_sha256"), signature=text("signature"),
                      source="adapter" if meta.get("source") == "adapter" else "trained")


class Admission:
    """The coordinator's gate for one run: checks, records and stores every reply."""

    def __init__(self, job: ValuationJob, ledger: Ledger, expected: Mapping[str, tuple[int, ...]],
                 progress: Callable[..., None] = lambda *_a, **_k: None) -> None:
        self.job, self.ledger, self.expected, self.progress = job, ledger, dict(expected), progress
        self.keys = {o.name: load_public_key(o.public_key) for o in job.owners if o.public_key}
        self.storage_key = load_storage_key(job.storage_key) if job.storage_key else None
        self.spec_sha256 = job.spec.digest()
        self.accepted: dict[str, Submission] = {}
        """Submissions accepted by this process (the ledger also has them, sealed)."""
        self.refused: list[dict] = []
        """Replies that named no owner of this run, or were replays: not players, kept for audit."""

    # a reply ------------------------------------------------------------------------
    def reason(self, sub: Submission, issued_nonce: str | None) -> str | None:
        """Why ``sub`` (a reply to the request that carried ``issued_nonce``) is refused, or None."""
        if sub.error:
            return sub.error
        if sub.owner not in self.job.owner_names:
            return "unknown owner: not on this run's allowlist"
        if self.job.requires_signatures:
            if not sub.signature:
                return "unsigned submission (this run requires owner signatures)"
            if sub.run_id != self.job.run_id:
                return f"replay: the reply is for run {sub.run_id or '?'}, not {self.job.run_id}"
            if issued_nonce is None or sub.nonce != issued_nonce:
                return "replay: the reply does not carry the nonce of the request it answers"
            used = self.ledger.use_nonce(self.job.run_id, sub.nonce)
            if used:
                return used
            if sub.spec_sha256 != self.spec_sha256:
                return (f"spec mismatch: trained under spec {sub.spec_sha256[:12] or '?'}, "
                        f"this run's spec is {self.spec_sha256[:12]}")
        digest = sub.digest
        if sub.tensors and sub.claimed_sha256 and digest != sub.claimed_sha256:
            return "adapter digest does not match the tensors received"
        if self.job.requires_signatures:
            claim = SubmissionClaim(self.job.run_id, issued_nonce or "", sub.owner, digest, int(sub.num_examples),
                                    self.spec_sha256)
            if not verify_claim(self.keys[sub.owner], claim, sub.signature):
                return f"bad signature: not signed by {sub.owner}'s registered key, or the signed fields were altered"
        # the content checks are the valuation's own, so what is admitted is what it would value
        return rejection_reason(sub, self.expected, self.job.spec.lora_r, self.job.adapter_limits, self.job.composition)

    def admit(self, sub: Submission, issued_nonce: str | None) -> str | None:
        """Check ``sub``, record it in the ledger (sealing an accepted adapter); return the reason or None."""
        reason = self.reason(sub, issued_nonce)
        digest = sub.digest
        meta = ledger_meta(sub)
        sealed = None
        if reason is None and self.storage_key is not None and sub.tensors is not None:
            sealed = seal(self.storage_key, tensors_to_bytes(sub.tensors),
                          sealing_context(self.job.run_id, sub.owner, digest))
        if sub.owner not in self.job.owner_names or reason and reason.startswith("replay"):
            self.refused.append({"owner": sub.owner, "reason": reason})
        status = SubmissionStatus.ACCEPTED if reason is None else SubmissionStatus.REJECTED
        self.ledger.record_submission(self.job.run_id, sub.owner, status=status, reason=reason, meta=meta,
                                      sealed=sealed)
        if reason is None:
            self.accepted[sub.owner] = sub
        faults.hit("after_submission_recorded")
        return reason

    # resuming -------------------------------------------------------------------------
    def stored(self) -> dict[str, Submission]:
        """Accepted submissions already in the ledger, decrypted (an owner never retrains for these).

        A wrong storage key is a :class:`~common.trust.sealing.SealError`: the run stops before any
        work, and nothing in the ledger is changed or lost.
        """
        out = {}
        stored = self.ledger.stored_adapters(self.job.run_id)
        if stored and self.storage_key is None:
            raise FairPoolError("the ledger holds sealed adapters of this run but the job names no storage key")
        key = self.storage_key
        for owner, (digest, blob, meta) in stored.items():
            assert key is not None  # checked above: stored adapters need the key
            tensors = tensors_from_bytes(unseal(key, blob, sealing_context(self.job.run_id, owner, digest)))
            sub = submission_from_ledger(owner, digest, tensors, meta)
            if sub.digest != digest:
                raise FairPoolError(f"stored adapter of {owner} does not match its recorded digest")
            out[owner] = sub
        return out
