"""``server/report/verify.py`` and ``fairpool verify-report`` / ``fairpool keys generate``: real keys, a real
signed report file and a real PEFT adapter directory written by ``server.valuation.decoding``."""

from __future__ import annotations

import json
import re
import shutil
import stat

import numpy as np
import pytest

from common.errors import ConfigError
from common.trust.digest import tensors_sha256
from common.trust.signing import (
    SignatureError,
    fingerprint,
    generate_private_key,
    load_private_key,
    public_key_text,
    report_file_bytes,
    save_keypair,
    sign_report,
)
from server.cli.main import main
from server.report.verify import VerificationError, adapter_dir_sha256, verify_report_file
from tests.test_signing import sample_report


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """The coordinator's key pair on disk: ``(private key, path of NAME.pub)``."""
    key = generate_private_key()
    _, pub_path = save_keypair(key, tmp_path_factory.mktemp("coordinator-keys"), "coordinator")
    return key, pub_path


@pytest.fixture(scope="module")
def owner_adapter(base_model_dir, fast_spec, tmp_path_factory):
    """A PEFT directory holding seeded random LoRA tensors of the right names and shapes, and its digest.

    Random tensors rather than training: the check is about bytes on disk, and this takes a second.
    """
    from common.model.base import load_base_model
    from common.model.lora import expected_adapter_shapes
    from server.valuation.decoding import save_adapter_dir

    base, _ = load_base_model(str(base_model_dir))
    rng = np.random.default_rng(7)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) * 0.01
               for name, shape in expected_adapter_shapes(fast_spec, base).items()}
    out = save_adapter_dir(str(base_model_dir), fast_spec, "clean", tensors,
                           tmp_path_factory.mktemp("adapters") / "clean")
    return out, tensors_sha256(tensors)


def _write_signed(path, key, report=None):
    """Write the report as ``server.report.write.write_report`` and ``fetch-report`` do."""
    path.write_bytes(report_file_bytes(sign_report(report or sample_report(), key)))
    return path


def _with_owner_digest(digest: str) -> dict:
    report = sample_report()
    report["owners"][0]["adapter_sha256"] = digest
    return report


def test_saved_peft_dir_has_the_digest_of_the_tensors_it_was_given(owner_adapter):
    directory, digest = owner_adapter
    assert (directory / "adapter_config.json").is_file()
    found, count = adapter_dir_sha256(directory)
    assert found == digest and count > 0


def test_signed_report_file_verifies_and_says_what_it_checked(tmp_path, coordinator):
    key, pub_path = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    lines = verify_report_file(path, pub_path)
    assert fingerprint(key.public_key()) in lines[0]
    assert "run run-1, 2 owners (2 valued)" in lines[1]
    assert verify_report_file(path, public_key_text(key.public_key())) == lines  # base64 key works too


def test_owner_adapter_check_good_and_bad(tmp_path, coordinator, owner_adapter):
    from safetensors.numpy import load_file, save_file

    key, pub_path = coordinator
    directory, digest = owner_adapter
    path = _write_signed(tmp_path / "report.json", key, _with_owner_digest(digest))
    lines = verify_report_file(path, pub_path, owner="clean", adapter_dir=directory)
    assert any(f"sha256 {digest[:16]}" in line for line in lines)
    assert any("payout share 100.00%" in line for line in lines)

    altered = tmp_path / "altered"
    shutil.copytree(directory, altered)
    tensors = load_file(str(altered / "adapter_model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].copy()
    tensors[first].flat[0] += np.float32(1e-3)
    save_file(tensors, str(altered / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(VerificationError, match=rf"owner 'clean'.*{digest[:16]}.*not the adapter"):
        verify_report_file(path, pub_path, owner="clean", adapter_dir=altered)


def test_owner_must_be_in_the_report_and_valued(tmp_path, coordinator, owner_adapter):
    key, pub_path = coordinator
    directory, digest = owner_adapter
    report = _with_owner_digest(digest)
    report["owners"][1].update(status="rejected", reason="no reply before the timeout")
    path = _write_signed(tmp_path / "report.json", key, report)
    with pytest.raises(VerificationError, match="'acme' is not in the report"):
        verify_report_file(path, pub_path, owner="acme", adapter_dir=directory)
    with pytest.raises(VerificationError, match="'flipped' was not valued.*timeout"):
        verify_report_file(path, pub_path, owner="flipped", adapter_dir=directory)


def test_unusable_inputs_are_config_errors(tmp_path, coordinator):
    key, pub_path = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    with pytest.raises(ConfigError, match="no such report"):
        verify_report_file(tmp_path / "missing.json", pub_path)
    with pytest.raises(ConfigError, match="go together"):
        verify_report_file(path, pub_path, owner="clean")
    with pytest.raises(ConfigError, match="no adapter_model.safetensors"):
        verify_report_file(path, pub_path, owner="clean", adapter_dir=tmp_path)


def test_unsigned_report_file_is_a_signature_error(tmp_path, coordinator):
    _, pub_path = coordinator
    path = tmp_path / "report.json"
    path.write_text(json.dumps(sample_report(), indent=2))
    with pytest.raises(SignatureError, match="not signed"):
        verify_report_file(path, pub_path)


# ------------------------------------------------------------------ the CLI


def _tamper_one_digit(path) -> None:
    """Change one digit of one value (clean's Shapley value) in the file's text."""
    text = path.read_text()
    match = re.search(r'"value": 0\.7290123456789012', text)
    assert match, "the value to tamper with is in the file"
    start = match.start() + len('"value": 0.72')
    path.write_text(text[:start] + ("8" if text[start] != "8" else "7") + text[start + 1:])


def test_cli_verify_report_exit_codes(tmp_path, coordinator, capsys):
    key, pub_path = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    assert main(["verify-report", str(path), "--coordinator-key", str(pub_path)]) == 0
    out = capsys.readouterr().out
    assert "valid ed25519 signature" in out and out.rstrip().endswith("OK")

    _tamper_one_digit(path)
    assert main(["verify-report", str(path), "--coordinator-key", str(pub_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "altered" in err

    other_key = generate_private_key()
    _write_signed(path, other_key)
    assert main(["verify-report", str(path), "--coordinator-key", str(pub_path)]) == 1
    assert f"signed by key {fingerprint(other_key.public_key())}" in capsys.readouterr().err


def test_cli_verify_report_owner_adapter(tmp_path, coordinator, owner_adapter, capsys):
    key, pub_path = coordinator
    directory, digest = owner_adapter
    good = _write_signed(tmp_path / "good.json", key, _with_owner_digest(digest))
    bad = _write_signed(tmp_path / "bad.json", key, _with_owner_digest("0" * 64))
    args = ["--coordinator-key", public_key_text(key.public_key()), "--owner", "clean", "--adapter", str(directory)]
    assert main(["verify-report", str(good), *args]) == 0
    assert "as in the report" in capsys.readouterr().out
    assert main(["verify-report", str(bad), *args]) == 1
    assert "not the adapter the report valued" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--owner", "clean"], "go together"),
    (["--adapter", "x"], "go together"),
])
def test_cli_verify_report_user_errors_exit_2(tmp_path, coordinator, capsys, extra, message):
    key, pub_path = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    assert main(["verify-report", str(path), "--coordinator-key", str(pub_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_verify_report_missing_files_exit_2(tmp_path, coordinator, capsys):
    key, pub_path = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    assert main(["verify-report", str(tmp_path / "nope.json"), "--coordinator-key", str(pub_path)]) == 2
    assert "no such report file" in capsys.readouterr().err
    assert main(["verify-report", str(path), "--coordinator-key", str(tmp_path / "nope.pub")]) == 2
    assert "error: " in capsys.readouterr().err


def test_cli_keys_generate(tmp_path, monkeypatch, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--name", "acme"]) == 0
    printed = capsys.readouterr().out
    key = load_private_key(out / "acme.key")
    assert str(out / "acme.key") in printed and str(out / "acme.pub") in printed
    assert fingerprint(key.public_key()) in printed
    assert stat.S_IMODE((out / "acme.key").stat().st_mode) == 0o600

    assert main(["keys", "generate", "--out", str(out), "--name", "acme"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_private_key(out / "acme.key").public_key() == key.public_key()

    monkeypatch.setenv("FAIRPOOL_TEST_PASSPHRASE", "s3cret phrase")
    assert main(["keys", "generate", "--out", str(out), "--name", "acme", "--force",
                 "--passphrase-env", "FAIRPOOL_TEST_PASSPHRASE"]) == 0
    assert "encrypted" in capsys.readouterr().out
    assert load_private_key(out / "acme.key", passphrase=b"s3cret phrase").public_key() != key.public_key()

    monkeypatch.delenv("FAIRPOOL_TEST_PASSPHRASE")
    assert main(["keys", "generate", "--out", str(out), "--name", "other",
                 "--passphrase-env", "FAIRPOOL_TEST_PASSPHRASE"]) == 2
    assert "unset or empty" in capsys.readouterr().err
    assert not (out / "other.key").exists()


def test_duplicate_keys_are_refused_so_no_viewer_can_show_a_fake_block(coordinator, tmp_path, capsys):
    """Issue 12 #9: a fake "payout" placed before the real one verified OK (json keeps the last key)."""
    key, pub = coordinator
    path = _write_signed(tmp_path / "report.json", key)
    text = path.read_text()
    fake = '{\n  "payout": {"shares": {"clean": 1.0}},' + text.lstrip()[1:]
    assert json.loads(fake)["payout"] == json.loads(text)["payout"]  # the stdlib would keep the real one
    path.write_text(fake)
    code = main(["verify-report", str(path), "--coordinator-key", str(pub)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "'payout' twice" in err


def test_deeply_nested_report_is_one_line_not_a_traceback(coordinator, tmp_path, capsys):
    key, pub = coordinator
    for depth in (100, 100_000):
        path = tmp_path / f"deep{depth}.json"
        path.write_text('{"a": ' + "[" * depth + "]" * depth + "}")
        code = main(["verify-report", str(path), "--coordinator-key", str(pub)])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and "nests deeper than" in err, err


@pytest.mark.parametrize("edit, code, message", [
    pytest.param(lambda t: "\ufeff" + t, 2, "not a JSON report", id="byte-order mark"),
    pytest.param(lambda t: t + "\n\n", 1, "line ", id="trailing blank line"),
    pytest.param(lambda t: t.replace('"run_id"', '"\\u0072un_id"', 1), 1, "line", id="escaped key spelling"),
    pytest.param(lambda t: json.dumps(json.loads(t), indent=4) + "\n", 1, "line 2", id="re-indented"),
    pytest.param(lambda t: json.dumps(json.loads(t), indent=2, ensure_ascii=False) + "\n", 1, "line",
                 id="unescaped"),
])
def test_only_the_exact_signed_bytes_verify(coordinator, tmp_path, capsys, edit, code, message):
    """Issue 12: the signature covers exactly the bytes a viewer reads. Each edit keeps the parsed
    content (so the signature alone would still match) but changes the bytes on disk."""
    key, pub = coordinator
    report = sample_report()
    report["owners"][0]["name"] = "clé"  # a non-ASCII name: escaped in the one encoding
    path = _write_signed(tmp_path / "report.json", key, report)
    text = path.read_text(encoding="utf-8")
    edited = edit(text)
    assert edited != text and json.loads(edited.lstrip("\ufeff")) == json.loads(text)
    path.write_text(edited, encoding="utf-8")
    assert main(["verify-report", str(path), "--coordinator-key", str(pub)]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    if code == 1:
        assert "not byte for byte the signed report" in err, err


def test_nan_is_refused_when_reading_and_writing(coordinator, tmp_path, capsys):
    key, pub = coordinator
    report = sign_report(sample_report(), key)
    with pytest.raises(ValueError):
        report_file_bytes({**report, "extra": float("nan")})
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report, "extra": float("nan")}, indent=2) + "\n")
    code = main(["verify-report", str(path), "--coordinator-key", str(pub)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "NaN" in err and len(err.splitlines()) == 1, err


def test_written_and_fetched_reports_are_the_same_bytes(coordinator, tmp_path):
    """``server.report.write.write_report`` and the owner's ``fetch-report`` write one encoding."""
    from client.fetch import write_report as write_fetched

    key, _ = coordinator
    report = sign_report(sample_report(), key)
    fetched = write_fetched(report, tmp_path / "fetched.json")
    assert fetched.read_bytes() == report_file_bytes(report)
    assert verify_report_file(fetched, key.public_key())
