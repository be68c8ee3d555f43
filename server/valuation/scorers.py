"""Scorers: the reward ``r(x, y)`` of the generation-based utility (method.md §3, *reward*).

A scorer takes a batch of prompts and responses and returns one float per pair; ``nan``
marks a pair outside the scorer's domain (the utility averages over the others). Three kinds:

- built-in programmatic scorers of the embedded two-objective market (``helpful``, ``harmless``);
- a reward model: any local Hugging Face sequence-classification directory, scored in batches;
- a user callable given as ``module:function``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from common.errors import ConfigError

Scorer = Callable[[list[str], list[str]], list[float]]


def builtin_scorers() -> dict[str, Scorer]:
    from common.embedded.objectives import BUILTIN_SCORERS

    return dict(BUILTIN_SCORERS)


class RewardModelScorer:
    """Scores ``prompt + response`` with a sequence-classification model.

    One output label: its logit is the reward. Two or more: the logit of the last label minus
    the log-sum-exp of the others (log-odds of "good"), the usual binary-classifier reading.
    """

    def __init__(self, directory: str | Path, batch_size: int = 32, max_length: int = 256) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(directory).expanduser()
        if not path.exists():
            raise ConfigError(f"reward model directory not found: {directory}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype="float32")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load reward model {directory}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        with torch.no_grad():
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[lo : lo + self.batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                logits = self.model(**enc).logits.float()
                if logits.shape[-1] == 1:
                    batch = logits[:, 0]
                else:
                    batch = logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=-1)
                scores.extend(batch.tolist())
        return scores


IMPORT_PATH_VAR = "FAIRPOOL_IMPORT_PATH"
"""Folders (``os.pathsep``-separated) where a user's ``module:function`` is looked for when the
interpreter cannot import it: the CLI sets it to its working directory for the run's processes."""


def import_user_module(module_name: str):
    """Import ``module_name`` as users expect: from the interpreter's path, else from the current
    working directory and the folders of ``$FAIRPOOL_IMPORT_PATH`` (a console script's path does not
    hold the folder it was started in). Those folders go *after* everything else on ``sys.path``,
    so a user's ``common.py`` can never shadow FairPool's own packages."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0]:
            raise  # the module was found; something it imports is missing
        extra = [os.getcwd(), *filter(None, os.environ.get(IMPORT_PATH_VAR, "").split(os.pathsep))]
        added = [d for d in dict.fromkeys(extra) if d not in sys.path]
        if not added:
            raise
        sys.path.extend(added)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def import_scorer(reference: str) -> Scorer:
    """Load ``module:function``; the function takes (prompts, responses) lists."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"scorer {reference!r}: expected module:function")
    try:
        target = getattr(import_user_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"scorer {reference!r}: {exc} (looked in the current folder too)") from exc
    if not callable(target):
        raise ConfigError(f"scorer {reference!r} is not callable")
    return target


def resolve_scorers(names: Sequence[str], reward_models: Mapping[str, str],
                    callables: Mapping[str, str]) -> dict[str, Scorer]:
    """The scorer for each name: a user callable, else a reward model, else a built-in."""
    clash = set(reward_models) & set(callables)
    if clash:
        raise ConfigError(f"scorer name used twice: {sorted(clash)}")
    builtins: dict[str, Scorer] | None = None
    resolved: dict[str, Scorer] = {}
    for name in names:
        if name in callables:
            resolved[name] = import_scorer(callables[name])
        elif name in reward_models:
            resolved[name] = RewardModelScorer(reward_models[name])
        else:
            builtins = builtins if builtins is not None else builtin_scorers()
            if name not in builtins:
                known = sorted({*builtins, *reward_models, *callables})
                raise ConfigError(f"unknown scorer {name!r}; known: {', '.join(known)} "
                                  "(add one to `reward_models` (NAME=DIR) or `scorers` (NAME=module:function))")
            resolved[name] = builtins[name]
    return resolved


def checked_scores(name: str, scorer: Scorer, prompts: list[str], responses: list[str]) -> list[float]:
    """Call a scorer and check it returned one number (or nan) per pair."""
    scores = list(scorer(prompts, responses))
    if len(scores) != len(prompts):
        raise ConfigError(f"scorer {name} returned {len(scores)} scores for {len(prompts)} responses")
    out = []
    for value in scores:
        value = float(value)
        if math.isinf(value):
            raise ConfigError(f"scorer {name} returned an infinite score")
        out.append(value)
    return out
