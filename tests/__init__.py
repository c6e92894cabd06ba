"""wsss's tests, a regular package so that `tests.*` is this one, also in subprocesses.

Some distributions install a top-level `tests` package into site-packages (label-studio-converter
does); a folder without __init__.py would lose the import to it.
"""
