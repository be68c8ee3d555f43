"""The one reader of a key's passphrase from the environment (common/trust/passphrase.py)."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.trust.passphrase import passphrase_from_env


def test_no_variable_named_means_no_passphrase():
    assert passphrase_from_env(None, what="--passphrase-env") is None


def test_the_named_variable_is_read_as_utf8_bytes(monkeypatch):
    monkeypatch.setenv("FAIRPOOL_TEST_PP", "s3cret phrasé")
    assert passphrase_from_env("FAIRPOOL_TEST_PP", what="--passphrase-env") == "s3cret phrasé".encode()
    assert passphrase_from_env("X", what="w", environ={"X": "y"}) == b"y"


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_variable_is_a_config_error_naming_it(value, monkeypatch):
    monkeypatch.delenv("FAIRPOOL_TEST_PP", raising=False)
    if value is not None:
        monkeypatch.setenv("FAIRPOOL_TEST_PP", value)
    with pytest.raises(ConfigError) as info:
        passphrase_from_env("FAIRPOOL_TEST_PP", what="--passphrase-env")
    assert str(info.value) == "--passphrase-env FAIRPOOL_TEST_PP: that environment variable is unset or empty"


def test_an_empty_variable_name_is_not_taken_for_no_passphrase():
    """``--passphrase-env ''`` asks for a passphrase: it must not silently write an unencrypted key."""
    with pytest.raises(ConfigError, match="unset or empty"):
        passphrase_from_env("", what="--passphrase-env", environ={})
