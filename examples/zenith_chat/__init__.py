"""Zenith chat (seed 003) on the Hornbeam engine; see app.py."""
