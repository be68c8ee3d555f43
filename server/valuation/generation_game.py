"""The generation-based utility: v(S) = mean reward of what coalition S's model generates.

Decoding is the expensive part, so each coalition is decoded once per run (same prompts,
same random numbers for every coalition: common random numbers) and its responses are shared
by every scorer; the utilities themselves are memoised in the ledger under a key derived from
everything that determines them, so a re-run never decodes a coalition twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from common.errors import ConfigError
from common.trust.canonical import json_sha256
from common.valuation.bits import members_of
from common.valuation.game import Game, UtilityStore
from server.valuation.scorers import Scorer, checked_scores


class CoalitionGenerations:
    """Responses of each coalition to the evaluation prompts, decoded on first request."""

    def __init__(self, decoder, prompts: Sequence, config, n: int,
                 progress: Callable[[str], None] = lambda _m: None) -> None:
        from common.model.tokenization import prompt_text

        self.decoder = decoder
        self.prompts = list(prompts)
        """What is decoded: strings, or conversations (decoded through the chat template)."""
        self.texts = [p if isinstance(p, str) else prompt_text(decoder.tokenizer, p) for p in self.prompts]
        """The prompts as text, for scorers and the ledger key (a conversation as its chat rendering)."""
        self.config = config
        self.n = n
        self.progress = progress
        self._responses: dict[int, list[str]] = {}

    def responses(self, mask: int) -> list[str]:
        if mask not in self._responses:
            members = list(members_of(mask, self.n))
            self._responses[mask] = self.decoder.generate(self.prompts, members, self.config)
            self.progress(f"decoded coalition {sorted(members)} ({len(self._responses)} so far)")
        return self._responses[mask]


def mean_reward(name: str, scorer: Scorer, prompts: list[str], responses: list[str]) -> float:
    """Mean score over the prompts in the scorer's domain (``nan`` scores are out of it)."""
    scores = np.array(checked_scores(name, scorer, prompts, responses), dtype=np.float64)
    if np.all(np.isnan(scores)):
        raise ConfigError(f"scorer {name} scored none of the {len(prompts)} evaluation prompts "
                          "(all outside its domain)")
    return float(np.nanmean(scores))


def reward_game(players: Sequence[str], generations: CoalitionGenerations, name: str, scorer: Scorer, *,
                key: str = "", store: UtilityStore | None = None) -> Game:
    """The game ``v(S) = mean reward of S's generations`` for one scorer."""

    def utility(masks: np.ndarray) -> np.ndarray:
        return np.array([mean_reward(name, scorer, generations.texts, generations.responses(int(m)))
                         for m in masks.tolist()])

    return Game(players, utility, key=key, store=store)


def reward_game_key(name: str, adapter_digests: Sequence[str], base_fingerprint: str, composition: str,
                    sizes: Sequence[int], prompts: Sequence[str], decoding: dict, scorer_identity: str) -> str:
    """A ledger key that changes whenever anything that determines the utilities changes."""
    digest = json_sha256({"adapters": list(adapter_digests), "base": base_fingerprint, "composition": composition,
                          "sizes": list(sizes), "prompts": list(prompts), "decoding": decoding,
                          "scorer": scorer_identity})
    return f"reward:{name}:{digest[:24]}"
