"""The daemon's one HTTP server (aiohttp): TLS, per-peer limits and the deadlines that keep
slow or hostile clients from holding it; the pull API and the console mount their routes."""
