"""Device protocol code: Modbus barrier PLCs and serial plate readers, driven by profiles."""
