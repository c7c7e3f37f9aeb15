"""One module per DVC stage; each exposes `run(...)`, called by the CLI."""
