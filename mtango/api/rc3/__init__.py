"""The mTango REST API rc3, under ``{app_base}/rc3``.

One blueprint group, one module per resource, each with a ``ROUTES`` table that maps URL templates
(relative to ``/rc3``) to handlers. To find an endpoint's code from its URL, look for the URL's
last fixed segments in the ``ROUTES`` tables: hosts.py (entry point, hosts, database, device list),
devices.py (device, state), attributes.py, events.py (long polling), commands.py,
properties.py, pipes.py.
"""

from __future__ import annotations

from sanic import Blueprint

from mtango.api.common import make_blueprint
from mtango.api.rc3 import attributes, commands, devices, events, hosts, pipes, properties

MODULES = (hosts, devices, attributes, events, commands, properties, pipes)


def blueprint(app_base: str) -> Blueprint:
    routes = [route for module in MODULES for route in module.ROUTES]
    return make_blueprint("rc3", f"{app_base}/rc3", routes)
