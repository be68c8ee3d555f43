"""Library errors in the command line's words.

The library names a setting by its field name in backticks (`` `min_owners` ``): that is the
keyword a Python caller passes, the key of a ``--spec`` file and of a job file. On the command
line the same setting is a flag, so the CLI shows every error through :func:`as_cli`, which puts
the flag in place of each setting it knows. One table maps settings to flags: the generated
options (whose flag :func:`~common.config.options.flag_of` gives) and the few the CLI declares
by hand under another name.
"""

from __future__ import annotations

import re
from functools import cache

from common.config.games import ValuationSettings
from common.config.hardware import Hardware
from common.config.options import flag_of, option_fields
from common.config.spec import TrainingSpec

__all__ = ["as_cli", "setting_flags"]

# Job settings whose options the CLI declares by hand (server.cli.main), by field name.
_HAND_DECLARED = {
    "owner_timeout_s": "--timeout", "min_owners": "--min-owners", "composition": "--composition",
    "payout_policy": "--payout-policy", "budget": "--budget", "adapter_examples": "--adapter-examples",
    "split": "--split", "default_split": "--split", "out_dir": "--out", "seed": "--seed",
    "chat_template": "--chat-template", "eval": "--eval", "owners": "--owner", "adapters": "--adapter",
    "force": "--force", "ca_cert": "--ca-cert", "refuse_audit": "--refuse-audit", "allow_audit": "--refuse-audit",
}

_SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


@cache
def setting_flags() -> dict[str, str]:
    """Field name → command-line flag, for every setting the CLI exposes."""
    flags = {f.name: flag_of(f) for cls in (TrainingSpec, Hardware, ValuationSettings) for f in option_fields(cls)}
    return {**flags, **_HAND_DECLARED}


def as_cli(error: BaseException | str) -> str:
    """``error``'s text with each `setting` it names shown as its flag (unknown names keep their backticks)."""
    flags = setting_flags()
    return _SETTING.sub(lambda m: flags.get(m.group(1), m.group(0)), str(error))
