"""The `fairpool` command line and the embedded default federation it runs."""
