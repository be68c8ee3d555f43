"""The embedded default world (optional): toy corpus, lexicon, markets, scorers, locally built models."""
