"""A user scorer for tests: ``tests.scorer_fixtures:length_score``."""


def length_score(prompts: list[str], responses: list[str]) -> list[float]:
    return [float(len(r)) for r in responses]


def wrong_count(prompts: list[str], responses: list[str]) -> list[float]:
    return [1.0]
