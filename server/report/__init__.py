"""The report: writing report.json/md/html and figures, and verifying a report offline."""
