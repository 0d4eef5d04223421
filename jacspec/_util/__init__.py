"""Small shared helpers: validation (check_choice, positive_int), seeds to generators
(random), the one JSON conversion (json), optional packages and their extras (extras)."""
