"""alemwatch."""
