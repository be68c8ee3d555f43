"""Trust: content digests, signatures, encryption at rest, adapter checks, failpoints for crash tests."""
