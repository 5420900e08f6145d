"""The control room's dashboard (``edgegate central web``): the park now, gates, roll call,
event search, overstays and blacklist proposals, admission reviews, dead letters; pages
rendered on the server in Chinese or English, live updates pushed (docs/dashboard.md)."""

from edgegate.central.dashboard.app import Dashboard
from edgegate.central.dashboard.settings import DashboardRole, DashboardSettings, Publishing

__all__ = ["Dashboard", "DashboardRole", "DashboardSettings", "Publishing"]
