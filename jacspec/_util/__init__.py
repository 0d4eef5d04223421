"""Small shared helpers: validation, the one JSON conversion."""
