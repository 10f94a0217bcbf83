"""The dpl command line: a thin typer skin over the engine."""
