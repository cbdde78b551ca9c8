"""The seed apps rebuilt on the Hornbeam engine; a package so `uvicorn examples.<app>...` works from the repo root."""
