"""Data in: the one batch adapter (batches), built-in and on-disk data sets (datasets), file
formats (formats)."""
