"""The pure core: domain types, events, policy, projections. No I/O lives here."""
