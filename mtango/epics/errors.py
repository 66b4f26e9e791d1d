"""The failures of the Channel Access client, as domain errors (no HTTP in here).

The client raises them (or returns them per PV in a batch); ``mtango.epics.backend`` maps each
class to the FAILURE body's reason and status at one boundary. ``connected`` says whether the PV
had a live connection when the error happened (the FAILURE items of batch reads carry it).

    ChannelError
    ├── ConnectTimeout      never connected: no IOC answered its search
    ├── Disconnected        was connected and lost its IOC
    ├── ReadTimeout         connected, the IOC did not answer a read
    ├── ArrayTooLarge       more than EPICS_CA_MAX_ARRAY_BYTES
    ├── TooManySearches     the worker's bound on names being searched for is reached
    ├── ServerError         the IOC answered with a CA error status
    ├── BadValue            a value to write that the PV's type cannot hold (nothing was sent)
    ├── NoWriteAccess       the IOC's access rights refuse writes to the PV (nothing was sent)
    └── WriteTimeout        connected, the IOC did not confirm a put with completion in time
"""

from __future__ import annotations


class ChannelError(Exception):
    """A CA failure of one PV, in words an operator can act on."""

    connected = True


class ConnectTimeout(ChannelError):
    """The PV never connected: no IOC answered its search (unknown name or IOC down)."""

    connected = False


class Disconnected(ChannelError):
    """The PV was connected and has lost its IOC (stopped, restarting, network)."""

    connected = False


class ReadTimeout(ChannelError):
    """The PV is connected but its IOC did not answer in time."""


class ArrayTooLarge(ChannelError):
    """The array is bigger than ``EPICS_CA_MAX_ARRAY_BYTES`` allows."""


class TooManySearches(ChannelError):
    """Opening the channel would exceed the worker's bound on names being searched for."""

    connected = False


class ServerError(ChannelError):
    """The IOC answered with a CA error status."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class BadValue(ChannelError):
    """A value to write that cannot be converted to the PV's native type (nothing was sent)."""


class NoWriteAccess(ChannelError):
    """The IOC's access rights for this client refuse writes to the PV (nothing was sent), or
    the IOC answered a put with ``ECA_NOWTACCESS``."""


class WriteTimeout(ChannelError):
    """A put with completion was sent but the IOC did not confirm it in time: the record may
    still be processing it, or may never do so. Puts are never sent again."""
