"""kiln: a deep-learning compiler in Python."""
