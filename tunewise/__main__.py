"""`python -m tunewise ...` is the `tunewise` command (launchers such as `accelerate launch -m tunewise` need it)."""

from tunewise.cli import app

app(prog_name="tunewise")
