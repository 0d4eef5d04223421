"""Models: builders, the one checkpoint format, loading any model file."""
