"""The publication service: owners fetch signed reports and follow live runs over gRPC."""
