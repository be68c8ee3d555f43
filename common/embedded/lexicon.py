"""The small world the embedded default speaks about.

The pretraining corpus and the synthetic preference market are generated from the same
vocabulary and sentence templates, so the tiny base model knows every word the market uses
but has no built-in preference between the two registers (kind vs unkind descriptions).
DPO then has something real to learn, and the ground truth is known: a *correct* preference
prefers the kind description.
"""

from __future__ import annotations

SUBJECTS: tuple[str, ...] = (
    "the garden", "the river", "the city", "the old bridge", "the market", "the school",
    "the train", "the museum", "the lake", "the forest", "the village", "the harbour",
    "the library", "the station", "the park", "the kitchen", "the hotel", "the beach",
    "the valley", "the castle", "the office", "the street", "the farm", "the island",
    "the theatre", "the hospital", "the bakery", "the tower", "the meadow", "the square",
    "the airport", "the church", "the cinema", "the stadium", "the canal", "the mountain",
    "the festival", "the concert", "the restaurant", "the playground",
)

KIND_WORDS: tuple[str, ...] = (
    "bright", "calm", "clean", "friendly", "warm", "lovely", "pleasant", "quiet", "safe",
    "beautiful", "cheerful", "gentle", "peaceful", "charming", "welcoming", "fresh",
    "sunny", "tidy", "delightful", "wonderful",
)

UNKIND_WORDS: tuple[str, ...] = (
    "dark", "noisy", "dirty", "rude", "cold", "ugly", "unpleasant", "loud", "unsafe",
    "broken", "gloomy", "harsh", "crowded", "boring", "hostile", "stale", "grey", "messy",
    "dreadful", "awful",
)

PROMPT_TEMPLATES: tuple[str, ...] = (
    "Tell me about {s}.",
    "What is {s} like?",
    "Describe {s}.",
    "How was {s} today?",
    "What do you think of {s}?",
)

RESPONSE_TEMPLATES: tuple[str, ...] = (
    " {S} is {a} and {b}.",
    " I think {s} was {a} and very {b}.",
    " {S} looked {a}, {b} and {c}.",
    " It was {a}; {s} felt {b}.",
)


def capitalise(text: str) -> str:
    """Upper-case the first character only (``str.capitalize`` lowers the rest)."""
    return text[:1].upper() + text[1:]


def render_response(template: str, subject: str, words: tuple[str, str, str]) -> str:
    """Fill a response template with a subject and three descriptive words."""
    a, b, c = words
    return template.format(s=subject, S=capitalise(subject), a=a, b=b, c=c)
