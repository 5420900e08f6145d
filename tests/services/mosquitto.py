"""Fixtures: a real mosquitto broker on 127.0.0.1 (TLS with a CA made in the test, passwords, ACL)."""
