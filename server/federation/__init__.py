"""Running a job through Flower: the ServerApp, collecting adapters, admission, the ledger, processes."""
