"""From admitted adapters to values: scoring, decoding, reward games, the valuation pipeline."""
