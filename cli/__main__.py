"""`python -m cli ...` is `wsss ...`."""

from cli import app

app()
