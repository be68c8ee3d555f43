"""FairPool server package."""
