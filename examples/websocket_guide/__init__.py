"""Seed 001 (Hornbeam's WebSocket guide), one runnable app per section; `app:app` serves them all."""
