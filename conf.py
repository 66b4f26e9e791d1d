"""Defaults for mtango-bridge, as the project layout has them: see ``mtango/defaults.py``.

The defaults live in the package (``mtango.defaults``) so that an installed wheel carries them;
this module re-exports them, so ``import conf`` and every ``conf.<setting>`` still work. To change
a setting for a deployment, use a YAML file (``--config``), the environment (``MTANGO_<NAME>``,
``TANGO_HOST``, ``EPICS_CA_*``) or a command-line flag, not this file.
"""

from mtango.defaults import *  # noqa: F403
