"""Studies of the method: arithmetic against really retrained coalitions, and training sweeps."""
