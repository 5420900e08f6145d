"""Device protocol code: Modbus barrier PLCs, serial plate readers, profiles loaded from drivers/."""
