"""The central side: the sink that stores gates' events, its store, and the pull client."""
