"""Sync with the central platform: the wire formats shared by gate and central (``protocol``),
signed downlink messages (``signing``), and the gate-side sync code."""
