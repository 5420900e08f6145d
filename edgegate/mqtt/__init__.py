"""MQTT plumbing shared by the gate's uplink and central's sink (see ``session``)."""
