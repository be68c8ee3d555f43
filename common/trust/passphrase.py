"""A private key's passphrase, read from an environment variable and never from argv.

Other users can read a process's command line (``ps``), so FairPool takes passphrases only
from the environment: ``--passphrase-env VAR`` on the command line, a job's
``coordinator_key_passphrase_env`` and an owner's ``signing-key-passphrase-env`` node config all
name the variable, and this module reads it, once, the same way for each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from common.errors import ConfigError

__all__ = ["passphrase_from_env"]


def passphrase_from_env(var: str | None, *, what: str, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The UTF-8 bytes of environment variable ``var``; None when no variable is named (``var`` None).

    A named variable that is unset or empty is a :class:`ConfigError` naming ``what`` (the
    option or setting that named it) and the variable, e.g. ``--passphrase-env VAR: that
    environment variable is unset or empty``: an empty passphrase would silently mean none.
    """
    if var is None:
        return None
    value = (os.environ if environ is None else environ).get(var)
    if not value:
        raise ConfigError(f"{what} {var}: that environment variable is unset or empty")
    return value.encode("utf-8")
