"""The valuation maths: coalitions, games, utilities, estimators, stopping, payout (numpy only, no torch)."""
