"""``common/wire/messages.py``: the one owner↔coordinator message schema, typed and versioned (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.wire.messages import WIRE_VERSION, Records, ReplyMeta, Roster, TrainingRequest, WireError

ROOT = Path(__file__).resolve().parents[1]


def test_a_reply_round_trips_through_its_record():
    meta = ReplyMeta("acme", num_examples=320, sha256="ab" * 32, dropped={"duplicate": 2}, run_id="r",
                     nonce="n", spec_sha256="cd" * 32, signature="sig", source="adapter")
    record = meta.to_record()
    assert record["wire_version"] == WIRE_VERSION
    assert all(isinstance(v, (str, int, bool)) for v in record.values())  # what a ConfigRecord holds
    assert ReplyMeta.from_record(record) == meta
    for short in (ReplyMeta("acme", error="training failed: boom"), ReplyMeta("acme", skipped=True)):
        assert ReplyMeta.from_record(short.to_record()) == short


def test_a_reply_of_another_version_or_malformed_becomes_a_recorded_reason():
    record = {**ReplyMeta("acme", num_examples=3).to_record(), "wire_version": WIRE_VERSION + 1}
    meta = ReplyMeta.from_record(record)
    assert meta.owner == "acme" and f"wire version {WIRE_VERSION + 1}" in meta.error
    assert "malformed reply" in ReplyMeta.from_record({"owner": "acme", "dropped": "[1, 2]"}).error
    assert "malformed reply" in ReplyMeta.from_record({"owner": "acme", "num_examples": "many"}).error
    assert ReplyMeta.from_record({"owner": "acme", "source": "elsewhere"}).source == "trained"


def test_request_and_roster_round_trip_and_check_their_version():
    request = TrainingRequest("r", "nonce", ("a", "b"))
    assert TrainingRequest.from_record(request.to_record()) == request
    assert TrainingRequest.from_record(None) == TrainingRequest()
    with pytest.raises(WireError, match="wire version 7"):
        TrainingRequest.from_record({**request.to_record(), "wire_version": 7})
    roster = Roster(("a", "b"), ("a.jsonl", ""), ("", ""), ("", "/ad"), (0, 12))
    assert Roster.from_record(roster.to_record()) == roster
    legacy = Roster.from_record({"names": ["a", "b"], "paths": ["x", "y"]})  # optional columns default
    assert legacy.keys == ("", "") and legacy.adapter_examples == (0, 0)
    with pytest.raises(WireError):
        Roster.from_record({"names": "a"})


@pytest.mark.parametrize("path", ["client/app.py", "server/federation/collect.py", "server/federation/audit_grid.py"])
def test_the_flower_layers_name_no_record_or_key_themselves(path):
    """The record names live in :class:`Records` only; a literal in a Flower layer would drift."""
    source = (ROOT / path).read_text()
    names = [v for k, v in vars(Records).items() if k.isupper()]
    literals = [n for n in names if re.search(rf"[\"']{n}[\"']", source)]
    assert not literals, f"{path} spells record names {literals}; use common.wire.messages.Records"
    for key in ("sha256", "nonce", "num_examples", "signature"):
        assert not re.search(rf"[\"']{key}[\"']", source), f"{path} reads meta key {key!r} itself"
