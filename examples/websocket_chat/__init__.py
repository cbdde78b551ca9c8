"""Hornbeam's WebSocket chat (seed 000) on the hornbeam_erlang engine; the app is `app:application`."""
