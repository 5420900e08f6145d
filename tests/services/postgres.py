"""Fixtures: a real PostgreSQL server on 127.0.0.1, started for the test session."""
