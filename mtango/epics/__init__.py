"""EPICS Channel Access for the bridge, apart from HTTP.

- ``pool.py``: the CA side. One caproto threading ``Context`` per worker process, a pool of shared
  channels (one per PV name, whatever the number of HTTP clients and listeners), a monitor per
  channel in use whose latest value serves reads, idle release; answers carry their metadata.
- ``channel.py`` (one PV), ``reads.py`` (the read scheduler), ``watchdog.py`` (dead caproto
  threads), ``compat.py`` (every touch of caproto internals), ``errors.py`` (domain errors).
- ``convert.py``: caproto responses to plain JSON-ready dicts (pure functions).
- ``names.py``: PV-name validation and the allow/deny rules.
- ``backend.py``: what the HTTP routes ask for (one value, many values, metadata, health), with
  CA failures turned into the bridge's one error model.
"""
