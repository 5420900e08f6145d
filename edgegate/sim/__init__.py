"""Simulators good enough to run a whole gate on a laptop: PLC, plate readers, scenarios."""
