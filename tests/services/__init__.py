"""Real peers the tests start themselves on 127.0.0.1: a mosquitto broker, a PostgreSQL server."""
