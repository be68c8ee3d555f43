"""FairPool common package."""
