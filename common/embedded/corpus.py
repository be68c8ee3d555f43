"""The bundled pretraining corpus of the embedded base model, generated from a seed.

Two worlds share it:

* the **sentiment** world of the default market (:mod:`common.embedded.lexicon`): plain descriptions
  and prompt→response exchanges in both registers in equal proportion, so the base model
  answers prompts in the market's format while staying indifferent between kind and unkind
  answers (``v(∅) = 0.5`` is then also what the base model would really score, not only the
  convention);
* the **two-objective** world (:mod:`common.embedded.objectives`): fact statements, answerable
  questions followed by an answer or a refusal, and harmful requests followed by a compliant
  answer or a refusal, each about equally often — the base model knows every fact but is
  undecided whether to answer, and whether to comply.

``OBJECTIVE_SHARE`` of the lines belong to the second world; they are interleaved with the
sentiment lines at positions drawn from the seed.
"""

from __future__ import annotations

import random

from common.embedded.lexicon import (
    KIND_WORDS,
    PROMPT_TEMPLATES,
    RESPONSE_TEMPLATES,
    SUBJECTS,
    UNKIND_WORDS,
    render_response,
)
from common.embedded.objectives import objective_corpus_lines

CORPUS_VERSION = 4
OBJECTIVE_SHARE = 0.4
"""Fraction of the corpus lines that speak about the two-objective world."""


def _words(rng: random.Random) -> tuple[str, str, str]:
    pool = KIND_WORDS if rng.random() < 0.5 else UNKIND_WORDS
    a, b, c = rng.sample(pool, 3)
    return a, b, c


def sentiment_lines(num_lines: int, rng: random.Random) -> list[str]:
    """Texts of the sentiment world: 70% prompt→response exchanges, 30% bare descriptions."""
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


def corpus_lines(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """Return ``num_lines`` pretraining texts; the same seed gives the same corpus."""
    rng = random.Random(f"fairpool-corpus-{CORPUS_VERSION}-{seed}")
    num_objective = round(OBJECTIVE_SHARE * num_lines)
    lines = sentiment_lines(num_lines - num_objective, rng)
    objective = objective_corpus_lines(num_objective, random.Random(f"fairpool-corpus-objectives-{CORPUS_VERSION}-{seed}"))
    positions = sorted(rng.sample(range(num_lines), num_objective))
    for position, line in zip(positions, objective):
        lines.insert(position, line)
    return lines
