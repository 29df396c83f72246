"""The ``streamtune`` command line: the typer app, the daemon driver and the progress display."""
