"""What a run is asked to do: the training spec, the games, the job file, the CLI options built from them."""
