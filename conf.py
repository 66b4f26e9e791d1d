"""Defaults for mtango-bridge.

Plain constants, as in mtango-py, so an operator can read every knob in one place. They are only
defaults: a YAML file (``--config``), environment variables (``MTANGO_<NAME>``, plus the standard
``TANGO_HOST`` and ``EPICS_CA_*``) and command-line flags override them, in that order. Nothing
here is read at import time by the package; ``mtango.config.load_config`` copies these values into
one ``Config`` object that is passed to whoever needs it.
"""

# HTTP server
app_base = "/tango/rest"
host = "0.0.0.0"
port = 8000
workers = 2
debug = False

# Tango
# The Tango database used when the URL does not name one, as "host:port". Empty: no control system
# is configured, and main.py starts the embedded demo instead.
tango_host = ""
# Allow-list of Tango databases the bridge may contact, as "host:port" strings. Empty means: only
# tango_host. A URL naming any other database gets 403 and opens no connection.
tango_hosts: list[str] = []
# Client-side timeout of every Tango call (milliseconds). Tango's own default is 3000.
tango_timeout_ms = 3000
# Threads that run blocking PyTango calls; and how many of them one device may occupy at once, so a
# slow or dead device cannot starve the others.
tango_threads = 32
tango_calls_per_device = 4
# Depth of attribute/command history returned when the request does not say.
history_depth = 10

# Caches (entries). Proxies are cheap to keep and costly (about 1 ms) to build.
device_cache_size = 256
attribute_cache_size = 2048
# Seconds an attribute configuration stays cached (labels, enum labels, formats can be changed).
attribute_cache_ttl = 60.0

# Errors: "rc3" answers Tango failures with HTTP 200 and a FAILURE body, as the Java mTango server
# does; "rc4" answers them with 400, 404 (unknown device/attribute/command) or 503 (timeout, down).
error_status = "rc3"

# CORS: origins allowed to call the API from a browser ("*" or a list of origins).
cors_origins: "str | list[str]" = "*"
