"""User-facing applications: the `ferkit` command line and the web service."""
