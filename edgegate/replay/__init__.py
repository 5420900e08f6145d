"""Technicians' replay of a gate's log (``edgegate replay``): read-only, on a gate's log file or
central's copy — timelines of vehicle cycles, decisions explained, what-if, findings, reports."""
