"""The embedding service of Hornbeam's docs (seed 000's "Next Steps"), rebuilt on the engine."""
