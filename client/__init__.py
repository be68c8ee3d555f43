"""FairPool client package."""
