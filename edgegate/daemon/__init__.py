"""The imperative shell around the core: lane runners, devices, the supervisor."""
