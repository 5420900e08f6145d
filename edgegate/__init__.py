"""edgegate: the vehicle checkpoint controller of a closed chemical park."""

__version__ = "0.1.0"
