"""The publication protocol's shared rules: what both the server and the owner's client must agree on.

The wire schema lives in ``publication.proto`` (generated ``publication_pb2*``); this module
holds the few conventions a schema cannot express — the token purpose, the metadata that
carries it, which events end a stream and who may see a run — so ``server/publication/service.py`` and
``client/fetch.py`` cannot drift apart. Pure: no grpc, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

PURPOSE = "fairpool-publication"
"""Token purpose: a token minted for another FairPool service is refused here, and vice versa."""

AUTH_METADATA = "authorization"
"""gRPC metadata key (lower case, as gRPC requires) carrying ``Bearer <token>``."""

BEARER = "Bearer "

TOKEN_MAX_AGE_S = 300.0
"""A token older than this is refused: long enough for clock drift and a slow call, short
enough that a leaked token (e.g. from a log) soon stops working."""

TERMINAL_STAGES = frozenset({"done", "error"})
"""Progress stages after which a run emits nothing more (``server/federation/run.py`` emits them last)."""


def bearer(token: str) -> str:
    """The ``authorization`` metadata value for ``token``."""
    return BEARER + token


def token_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The bearer token in ``metadata`` (keys lower case), or None when absent or not ``Bearer``."""
    value = metadata.get(AUTH_METADATA)
    if not value or not value.startswith(BEARER):
        return None
    token = value[len(BEARER):].strip()
    return token or None


def report_owner_names(report: Mapping | None) -> frozenset[str]:
    """Names of the owners a report lists (valued or rejected: both took part in the run)."""
    if not report:
        return frozenset()
    return frozenset(o["name"] for o in report.get("owners", ()) if isinstance(o, Mapping) and "name" in o)


def job_owner_names(job_json: str | None) -> frozenset[str]:
    """Names of the owners a job file (``ValuationJob.to_json``) expects; empty if unreadable.

    A live run has no report yet, so its job is the only record of who takes part.
    """
    try:
        job = json.loads(job_json or "")
    except ValueError:
        return frozenset()
    owners = job.get("owners", ()) if isinstance(job, dict) else ()
    return frozenset(o["name"] for o in owners if isinstance(o, dict) and isinstance(o.get("name"), str))
