"""The `make run` demo: a home page and every example app mounted under its prefix."""
