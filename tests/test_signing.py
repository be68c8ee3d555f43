"""Keys, claims, signed reports and tokens (``common/trust/signing.py``), with real Ed25519, no mocks."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

from common.errors import ConfigError
from common.trust.canonical import canonical_json
from common.trust.signing import (
    CLOCK_SKEW_S,
    SignatureError,
    SubmissionClaim,
    fingerprint,
    generate_private_key,
    load_private_key,
    load_public_key,
    new_nonce,
    public_key_text,
    save_keypair,
    sign_claim,
    sign_report,
    sign_token,
    token_owner,
    verify_claim,
    verify_report,
    verify_token,
)


@pytest.fixture(scope="module")
def alice():
    return generate_private_key()


@pytest.fixture(scope="module")
def bob():
    return generate_private_key()


def _claim(**changes) -> SubmissionClaim:
    claim = SubmissionClaim(run_id="run-20250101-abc", nonce="00" * 16, owner="alice",
                            adapter_sha256="ab" * 32, num_examples=320, spec_sha256="cd" * 32)
    return dataclasses.replace(claim, **changes)


def sample_report() -> dict:
    """A report in the contract's shape, with floats, unicode and nesting that JSON must keep."""
    return {
        "schema_version": 2,
        "run_id": "run-1",
        "owners": [{"name": "clean", "num_examples": 320, "adapter_sha256": "ab" * 32, "status": "valued",
                    "reason": None, "dropped": {}, "metrics": {"loss": 0.12345678901234}},
                   {"name": "flipped", "num_examples": 320, "adapter_sha256": "cd" * 32, "status": "valued",
                    "reason": None, "dropped": {"identical": 2}, "metrics": {"loss": 0.9}}],
        "games": [{"utility": "preference", "kind": "shapley", "empty": 0.5, "grand": 1.0, "evaluations": 4,
                   "values": {"clean": {"value": 0.7290123456789012, "stderr": 0.0, "count": 4},
                              "flipped": {"value": -0.2290123456789012, "stderr": 0.0, "count": 4}},
                   "coalitions": [{"members": [], "value": 0.5}, {"members": ["clean", "flipped"], "value": 1.0}]}],
        "payout": {"game": "preference", "budget": 100000.0, "policy": "positive", "kind": "shapley",
                   "policy_description": "owners with φ < 0 get nothing — v(∅) excluded",
                   "shares": {"clean": 1.0, "flipped": 0.0}, "amounts": {"clean": 100000.0, "flipped": 0.0},
                   "flagged": ["flipped"]},
        "settings": {"spec_sha256": "ef" * 32, "eval_path": "/data/held out/é.jsonl"},
    }


# ------------------------------------------------------------------ key files


def test_key_files_are_created_0600_and_round_trip(tmp_path, alice):
    key_path, pub_path = save_keypair(alice, tmp_path / "keys", "coordinator")
    assert key_path.name == "coordinator.key" and pub_path.name == "coordinator.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not stat.S_IMODE(pub_path.stat().st_mode) & 0o022
    assert b"BEGIN PRIVATE KEY" in key_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub_path.read_bytes()
    loaded = load_private_key(key_path)
    assert public_key_text(loaded.public_key()) == public_key_text(alice.public_key())
    assert not [p for p in key_path.parent.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_key_file_is_0600_even_under_a_permissive_umask(tmp_path, alice):
    old = os.umask(0)
    try:
        key_path, _ = save_keypair(alice, tmp_path, "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_refuses_to_overwrite_unless_forced(tmp_path, alice, bob):
    key_path, _ = save_keypair(alice, tmp_path, "k")
    with pytest.raises(ConfigError, match="already exists"):
        save_keypair(bob, tmp_path, "k")
    assert public_key_text(load_private_key(key_path).public_key()) == public_key_text(alice.public_key())
    save_keypair(bob, tmp_path, "k", force=True)
    assert public_key_text(load_private_key(key_path).public_key()) == public_key_text(bob.public_key())


def test_passphrase_round_trip_and_wrong_or_missing_passphrase(tmp_path, alice):
    key_path, _ = save_keypair(alice, tmp_path, "enc", passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()
    loaded = load_private_key(key_path, passphrase=b"correct horse")
    assert fingerprint(loaded.public_key()) == fingerprint(alice.public_key())
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_private_key(key_path, passphrase=b"battery staple")
    with pytest.raises(ConfigError, match="encrypted; give its passphrase"):
        load_private_key(key_path)


def test_private_key_load_errors_are_clear(tmp_path, alice):
    with pytest.raises(ConfigError, match="no such private key file"):
        load_private_key(tmp_path / "missing.key")
    key_path, pub_path = save_keypair(alice, tmp_path, "k")
    os.chmod(key_path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(key_path)
    os.chmod(key_path, 0o600)
    with pytest.raises(ConfigError, match="not encrypted"):
        load_private_key(key_path, passphrase=b"x")
    os.chmod(pub_path, 0o600)
    with pytest.raises(ConfigError, match="is a public key"):
        load_private_key(pub_path)
    junk = tmp_path / "junk.key"
    fd = os.open(junk, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"hello")
    os.close(fd)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_private_key(junk)


def test_non_ed25519_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "ec.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(ConfigError, match="Ed25519"):
        load_private_key(path)


def test_public_key_from_file_pem_text_or_base64(tmp_path, alice):
    _, pub_path = save_keypair(alice, tmp_path, "k")
    expected = public_key_text(alice.public_key())
    assert len(expected) == 44  # base64 of 32 bytes
    assert public_key_text(load_public_key(pub_path)) == expected
    assert public_key_text(load_public_key(str(pub_path))) == expected
    assert public_key_text(load_public_key(pub_path.read_text())) == expected
    assert public_key_text(load_public_key(expected)) == expected
    b64_file = tmp_path / "k.b64"
    b64_file.write_text(expected + "\n")
    assert public_key_text(load_public_key(b64_file)) == expected
    fp = fingerprint(alice.public_key())
    assert len(fp) == 16 and int(fp, 16) >= 0


@pytest.mark.parametrize("bad", ["nope", "QUJD", "not/a/file.pub"])
def test_public_key_garbage_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        load_public_key(bad)


def test_public_key_loader_refuses_a_private_key(tmp_path, alice):
    key_path, _ = save_keypair(alice, tmp_path, "k")
    with pytest.raises(ConfigError, match="is a private key"):
        load_public_key(key_path)


# ------------------------------------------------------------------ canonical JSON and claims


def test_canonical_json_is_stable_across_a_json_round_trip():
    report = sample_report()
    once = canonical_json(report)
    assert canonical_json(json.loads(json.dumps(report, indent=2))) == once
    assert canonical_json(json.loads(once)) == once
    assert once == canonical_json(dict(reversed(list(report.items()))))  # key order does not matter
    assert "é".encode() in once and b"\\u" not in once


def test_claim_signed_by_a_verifies_only_with_a(alice, bob):
    claim = _claim(nonce=new_nonce())
    signature = sign_claim(alice, claim)
    assert verify_claim(alice.public_key(), claim, signature)
    assert not verify_claim(bob.public_key(), claim, signature)
    assert not verify_claim(alice.public_key(), claim, sign_claim(bob, claim))


@pytest.mark.parametrize("field,value", [
    ("run_id", "run-20250101-abd"), ("nonce", "00" * 15 + "01"), ("owner", "alicf"),
    ("adapter_sha256", "ab" * 31 + "ac"), ("num_examples", 321), ("spec_sha256", "cd" * 31 + "ce")])
def test_changing_any_claim_field_breaks_the_signature(alice, field, value):
    signature = sign_claim(alice, _claim())
    assert verify_claim(alice.public_key(), _claim(), signature)
    assert not verify_claim(alice.public_key(), _claim(**{field: value}), signature)


@pytest.mark.parametrize("garbage", ["", "!!!", "AAAA", "A" * 88, None, 12])
def test_garbled_claim_signature_is_false_not_an_exception(alice, garbage):
    assert verify_claim(alice.public_key(), _claim(), garbage) is False


def test_claim_payload_is_domain_separated_and_claims_parse_strictly(alice):
    claim = _claim()
    assert claim.payload().startswith(b"fairpool-submission-v1\n")
    assert SubmissionClaim.from_dict(json.loads(json.dumps(claim.to_dict()))) == claim
    with pytest.raises(SignatureError, match="lacks nonce"):
        SubmissionClaim.from_dict({k: v for k, v in claim.to_dict().items() if k != "nonce"})
    with pytest.raises(SignatureError, match="num_examples"):
        SubmissionClaim.from_dict({**claim.to_dict(), "num_examples": "320"})
    assert new_nonce() != new_nonce() and len(new_nonce()) == 32


# ------------------------------------------------------------------ reports


def test_signed_report_verifies_after_a_file_round_trip(tmp_path, alice):
    report = sample_report()
    signed = sign_report(report, alice)
    assert "signature" not in report, "the input is not modified"
    block = signed["signature"]
    assert block["algorithm"] == "ed25519" and block["fingerprint"] == fingerprint(alice.public_key())
    assert block["public_key"] == public_key_text(alice.public_key())
    path = tmp_path / "report.json"
    path.write_text(json.dumps(signed, indent=2) + "\n")
    verify_report(json.loads(path.read_text()), alice.public_key())
    resigned = sign_report(json.loads(path.read_text()), alice)  # re-signing replaces the block
    verify_report(resigned, alice.public_key())


def test_report_verification_names_the_problem(alice, bob):
    report = sample_report()
    with pytest.raises(SignatureError, match="not signed"):
        verify_report(report, alice.public_key())
    signed = sign_report(report, alice)
    with pytest.raises(SignatureError, match=f"signed by key {fingerprint(alice.public_key())}, not by"):
        verify_report(signed, bob.public_key())
    with pytest.raises(SignatureError, match="algorithm"):
        verify_report({**signed, "signature": {**signed["signature"], "algorithm": "rsa"}}, alice.public_key())
    tampered = json.loads(json.dumps(signed))
    tampered["games"][0]["values"]["flipped"]["value"] = -0.2290123456789013
    with pytest.raises(SignatureError, match="altered"):
        verify_report(tampered, alice.public_key())
    forged = sign_report(tampered, bob)  # bob re-signs but claims to be alice
    forged["signature"].update(public_key=public_key_text(alice.public_key()),
                               fingerprint=fingerprint(alice.public_key()))
    with pytest.raises(SignatureError, match="altered"):
        verify_report(forged, alice.public_key())


def test_report_that_json_would_change_cannot_be_signed(alice):
    with pytest.raises(ValueError, match="round trip"):
        sign_report({"counts": {9: 1, 10: 2}}, alice)  # int keys sort 9 < 10, their strings "10" < "9"


# ------------------------------------------------------------------ tokens


def test_token_round_trip(alice):
    token = sign_token(alice, "acme", "publish", 1_000_000.0)
    assert token_owner(token) == "acme"
    assert verify_token(alice.public_key(), token, "publish", max_age_s=300, now=1_000_100.0) == "acme"
    assert verify_token(alice.public_key(), token, "publish", max_age_s=300, now=1_000_000.0 - CLOCK_SKEW_S) == "acme"


def test_expired_and_future_tokens_are_refused(alice):
    token = sign_token(alice, "acme", "publish", 1_000_000.0)
    with pytest.raises(SignatureError, match="expired"):
        verify_token(alice.public_key(), token, "publish", max_age_s=300, now=1_000_301.0)
    with pytest.raises(SignatureError, match="future"):
        verify_token(alice.public_key(), token, "publish", max_age_s=300, now=1_000_000.0 - CLOCK_SKEW_S - 1)


def test_token_for_another_purpose_or_key_is_refused(alice, bob):
    token = sign_token(alice, "acme", "publish", 1_000_000.0)
    with pytest.raises(SignatureError, match="not 'fetch-report'"):
        verify_token(alice.public_key(), token, "fetch-report", max_age_s=300, now=1_000_000.0)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(bob.public_key(), token, "publish", max_age_s=300, now=1_000_000.0)


def test_token_whose_body_is_swapped_is_refused(alice):
    token = sign_token(alice, "acme", "publish", 1_000_000.0)
    other = sign_token(alice, "globex", "publish", 1_000_000.0)
    spliced = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(SignatureError, match="does not verify"):
        verify_token(alice.public_key(), spliced, "publish", max_age_s=300, now=1_000_000.0)
    for garbage in ("", "abc", "a.b.c", "!!!.???"):
        with pytest.raises(SignatureError, match="malformed"):
            verify_token(alice.public_key(), garbage, "publish", max_age_s=300, now=1_000_000.0)
