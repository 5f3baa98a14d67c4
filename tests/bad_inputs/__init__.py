"""A corpus of bad inputs (built in a temp dir, never stored) and the tests that feed it to ferkit."""
