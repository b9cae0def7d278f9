"""One module per `sr` command; each holds thin Typer-annotated functions only."""
