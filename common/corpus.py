"""The bundled pretraining corpus of the embedded base model, generated from a seed.

It mixes plain descriptions and prompt→response exchanges in both registers in equal
proportion, so the base model answers prompts in the market's format while staying
indifferent between kind and unkind answers (``v(∅) = 0.5`` is then also what the base
model would really score, not only the convention).
"""

from __future__ import annotations

import random

from common.lexicon import (
    KIND_WORDS,
    PROMPT_TEMPLATES,
    RESPONSE_TEMPLATES,
    SUBJECTS,
    UNKIND_WORDS,
    render_response,
)

CORPUS_VERSION = 1


def _words(rng: random.Random) -> tuple[str, str, str]:
    pool = KIND_WORDS if rng.random() < 0.5 else UNKIND_WORDS
    a, b, c = rng.sample(pool, 3)
    return a, b, c


def corpus_lines(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """Return ``num_lines`` pretraining texts; the same seed gives the same corpus."""
    rng = random.Random(f"fairpool-corpus-{CORPUS_VERSION}-{seed}")
    lines: list[str] = []
    for _ in range(num_lines):
        subject = rng.choice(SUBJECTS)
        response = render_response(rng.choice(RESPONSE_TEMPLATES), subject, _words(rng))
        if rng.random() < 0.7:
            prompt = rng.choice(PROMPT_TEMPLATES).format(s=subject)
            lines.append(prompt + response)
        else:
            lines.append(response.strip())
    return lines
