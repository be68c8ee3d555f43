"""The statuses a run, an owner and a submission can have: one enum each, not bare strings.

They are ``StrEnum`` members, so they are stored in the ledger and written into reports as
the same plain strings as before (``"done"``, ``"valued"``), and compare equal to them; code
names them through the enum so that a misspelt status is an ``AttributeError``, not a run
that silently never matches. The valuation's own statuses (converged, budget exhausted) are
:class:`common.valuation.stopping.ValuationStatus`.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AdapterSource", "OwnerStatus", "RunStatus", "SubmissionStatus"]


class RunStatus(StrEnum):
    """A run in the ledger. Only ``RUNNING`` is live; ``STALE`` is a running row whose process died."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    STALE = "stale"


class OwnerStatus(StrEnum):
    """An owner of a run: named by the job, then valued (a player) or rejected with a reason."""

    EXPECTED = "expected"
    VALUED = "valued"
    REJECTED = "rejected"


class SubmissionStatus(StrEnum):
    """One reply an owner sent: admitted as a player's adapter, or refused with a reason."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class AdapterSource(StrEnum):
    """Where an owner's adapter comes from: trained for this run on its data, or one it already had."""

    TRAINED = "trained"
    ADAPTER = "adapter"

    @classmethod
    def of(cls, adapter_path: str) -> AdapterSource:
        """An owner named with an existing adapter's path is valued by it; otherwise it trains."""
        return cls.ADAPTER if adapter_path else cls.TRAINED
