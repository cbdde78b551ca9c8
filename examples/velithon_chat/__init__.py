"""Velithon chat (seed 004) on the Hornbeam engine; see app.py."""
