"""mtango-bridge: the mTango REST API (rc3) and EPICS PVs over HTTP + JSON."""

__version__ = "0.1.0"
