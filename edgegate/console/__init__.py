"""The guard's console: accounts, sessions and the pages served by the daemon's HTTP server,
talking to the gate only through ``edgegate.console.desk``."""
