"""Every use of caproto's internals, in one place, each with the measured reason it exists.

The bridge drives caproto's threading client (``caproto.threading.client``) without ever making a
blocking call (``mtango.epics.pool`` explains why). caproto's public API assumes blocking calls in
a few places, and a few of its defaults cost more than the bridge can afford; the fixes below
reach into names caproto does not promise to keep. They are tested against one caproto release:
pyproject pins it (``caproto==1.3.0``), and ``tests/test_epics_compat.py`` fails with the list of
vanished names (``missing_names``, ``missing_instance_names``) when an upgrade renames one. Nothing
outside this module touches a private caproto name or caproto's caches and threads.

What is used, by whom, and why (measured reasons in each function's docstring):

- ``SharedBroadcaster.broadcaster``, ``.udp_sock`` (``Broadcaster.send``): search only the
  configured addresses, not those of ``os.environ``;
- ``client.common.MIN_RETRY_SEARCHES_INTERVAL`` (``new_context``): the first search retry from
  the configuration;
- ``SelectorThread.add_socket``, ``._register_event``, ``VirtualCircuitManager._ready``,
  ``.user_callback_executor`` (``_wake_selector_for_new_circuits``): first connection in 7 ms
  instead of 105 ms, callbacks without a thread switch each;
- ``Subscription.callback_lock``, ``.callbacks``, ``._subscribe`` (``add_subscription_callback``):
  90 ms of CPU less per 1000 monitors; ``.subscriptionid`` (``subscription_pending``);
- ``PV._idle``, ``.component_lock``, ``ClientChannel``, ``VirtualCircuit.new_channel_id``
  (``revive``): reconnect a released PV without a blocking call;
- ``Context.pvs``, ``.pvs_needing_circuits``, ``.pv_cache_lock`` (``known``, ``forget``,
  ``revive``): free what given-up names hold;
- ``SharedBroadcaster.search`` with the bridge's own results queue, ``.get_cached_search_result``
  (``search``, ``search_answered``): no caproto PV for a name until an IOC has answered it;
  ``._search_lock``, ``.unanswered_searches`` (``cancel_searches``): give up many names at once;
- the ``_*_thread`` attributes of ``Context`` and ``SharedBroadcaster`` and
  ``Context._activate_subscriptions`` (``context_threads``, ``restart_subscription_thread``):
  notice and repair a context whose thread died;
- ``VirtualCircuitManager.circuit.address``, ``Context.circuit_managers`` (``connection_facts``,
  ``circuit_counts``): the IOC of a channel, health figures;
- ``caproto._utils.netifaces`` (``broadcast_addresses``): EPICS_CA_AUTO_ADDR_LIST;
- ``VirtualCircuit.process_command``, ``VirtualCircuitManager.ioids``,
  ``ErrorResponse.original_request`` (``_answer_error_responses``): a put or read the IOC
  refuses with a CA error message is answered at once (502) instead of timing out.

Puts need no internals: ``Batch.write`` (public) sends a put, with completion when given a
callback, without any of the waiting ``PV.write`` does (see ``mtango.epics.pool.ChannelPool.put``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import caproto as ca
import caproto.client.common as ca_common
from caproto.threading import client as ca_threading
from caproto.threading.client import PV, CallbackHandler, Context, SharedBroadcaster

log = logging.getLogger("mtango.epics")

TESTED_VERSION = "1.3.0"

# Names looked up on caproto's modules and classes (checked without any network).
CLASS_NAMES: dict[Any, tuple[str, ...]] = {
    ca_common: ("MIN_RETRY_SEARCHES_INTERVAL",),
    ca: ("ClientChannel", "ChannelType", "get_netifaces_addresses", "_utils"),
    ca.ClientChannel: ("create",),
    ca.VirtualCircuit: ("new_channel_id", "process_command"),
    ca.ErrorResponse: ("original_request", "status", "error_message"),
    ca.WriteNotifyRequest: ("ID",),
    ca.ReadNotifyRequest: ("ID",),
    CallbackHandler: ("add_callback", "remove_callback"),
    ca_threading.Subscription: ("_subscribe",),
    ca_threading.SelectorThread: ("add_socket",),
    SharedBroadcaster: ("send", "search_now", "cancel", "search", "get_cached_search_result"),
    Context: ("get_pvs", "reconnect", "disconnect", "_activate_subscriptions"),
    PV: ("go_idle", "subscribe", "connection_state_callback"),
}

# Names set on instances by caproto's constructors (checked on a live context, PV and monitor).
CONTEXT_NAMES = (
    "pvs", "pvs_needing_circuits", "pv_cache_lock", "circuit_managers", "broadcaster",
    "selector", "_process_search_results_thread", "_activate_subscriptions_thread",
)
BROADCASTER_NAMES = (
    "broadcaster", "udp_sock", "selector", "_command_thread", "_search_lock",
    "unanswered_searches",
    "_retry_unanswered_searches_thread", "_check_for_unresponsive_servers_thread",
)
SELECTOR_NAMES = ("_register_event", "thread")
PV_NAMES = (
    "_idle", "circuit_ready", "component_lock", "circuit_manager", "channel", "priority",
    "access_rights",
)
CIRCUIT_MANAGER_NAMES = (
    "circuit", "channels", "pvs", "dead", "subscriptions", "_ready", "user_callback_executor",
    "ioids",
)
CHANNEL_NAMES = ("native_data_type", "native_data_count")
SUBSCRIPTION_NAMES = ("callback_lock", "callbacks", "pv", "most_recent_response", "subscriptionid")


def missing_names() -> list[str]:
    """The module and class names this module relies on that caproto no longer has."""
    return [
        f"{getattr(owner, '__name__', owner)}.{name}"
        for owner, names in CLASS_NAMES.items()
        for name in names
        if not hasattr(owner, name)
    ]


def missing_instance_names(context: Context, pv: PV, subscription: Any) -> list[str]:
    """Instance attributes relied on, checked on a live ``context``, a connected ``pv`` and a
    ``subscription`` of it."""
    found = []
    circuit = pv.circuit_manager
    for label, obj, names in (
        ("Context", context, CONTEXT_NAMES),
        ("SharedBroadcaster", context.broadcaster, BROADCASTER_NAMES),
        ("SelectorThread", context.selector, SELECTOR_NAMES),
        ("PV", pv, PV_NAMES),
        ("VirtualCircuitManager", circuit, CIRCUIT_MANAGER_NAMES),
        ("ClientChannel", pv.channel, CHANNEL_NAMES),
        ("Subscription", subscription, SUBSCRIPTION_NAMES),
    ):
        found += [f"{label}.{n}" for n in names if not hasattr(obj, n)]
    if circuit is not None and not hasattr(circuit.circuit, "address"):
        found.append("VirtualCircuit.address")
    return found


# -- the context ---------------------------------------------------------------------------------


class Broadcaster(SharedBroadcaster):
    """caproto's search broadcaster, sending to the configured addresses only.

    caproto reads ``EPICS_CA_ADDR_LIST`` from ``os.environ`` on every send; the bridge's addresses
    come from its configuration instead (tests and several in-process bridges never share process
    environment). A failing address is logged once and does not stop the searches to the others
    (an exception here would end caproto's search thread).
    """

    def __init__(self, addresses: Iterable[tuple[str, int]]) -> None:
        self._addresses = list(addresses)
        self._failing: set[tuple[str, int]] = set()
        super().__init__()

    def send(self, *commands: Any) -> None:
        payload = self.broadcaster.send(*commands)
        sock = self.udp_sock
        if sock is None:
            return
        for address in self._addresses:
            try:
                sock.sendto(payload, address)
            except OSError as exc:
                if address not in self._failing:
                    self._failing.add(address)
                    log.warning("EPICS search to %s:%d failed: %s", *address, exc)
            else:
                self._failing.discard(address)


def new_context(addresses: Iterable[tuple[str, int]], timeout: float,
                search_retry: float) -> Context:
    """A caproto context searching ``addresses`` only, first retrying after ``search_retry`` s.

    caproto reads its first search retry interval from a module constant when a search starts;
    it is a process-wide setting, and a worker has one context."""
    ca_common.MIN_RETRY_SEARCHES_INTERVAL = search_retry
    context = Context(Broadcaster(addresses), timeout=timeout)
    _wake_selector_for_new_circuits(context)
    return context


class _WakingEvent(threading.Event):
    """A circuit's "ready" event that wakes caproto's selector when caproto starts waiting."""

    def __init__(self, selector: Any) -> None:
        super().__init__()
        self._selector = selector

    def wait(self, timeout: float | None = None) -> bool:
        self._selector._register_event.set()
        return super().wait(timeout)


class _InlineExecutor:
    """Runs a circuit's callbacks at once, on the thread that received the message.

    caproto hands every callback (connection, read answer, monitor update) to a per-circuit
    ``ThreadPoolExecutor``: a Future, a Condition and a thread switch each, about as much CPU
    as the bridge's whole handling of the answer. The bridge's callbacks only queue a job for the
    event loop (``Handoff.post``), never block, so they can run where the message is read; the
    order stays that of the messages. An exception is logged, never raised into caproto's
    selector thread (which would end it).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("EPICS callback %r failed", fn)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _wake_selector_for_new_circuits(context: Context) -> None:
    """Let caproto's selector thread see a new circuit's socket without its 0.1 s nap.

    ``add_socket`` registers the socket but does not wake the selector thread, which, while it
    has no socket yet, looks again only every 0.1 s: the first PV a worker asks for took 105 ms
    to connect instead of 7 ms (measured). Waking it at once is unsafe: an IOC sends its version
    as soon as it accepts, and caproto's circuit state machine (not thread-safe) loses that
    answer if it is read while the circuit is still sending its own greeting; caproto then drops
    the circuit and its search thread dies (measured: 2 cold starts in 10). So the wake-up
    happens when caproto, greeting sent, starts waiting for the answer: the circuit's "ready"
    event is swapped, before the socket is registered, for one that wakes the selector.
    """
    selector = context.selector
    add_socket = selector.add_socket

    def add_and_wake(sock: Any, target: Any) -> None:
        ready = getattr(target, "_ready", None)
        if type(ready) is threading.Event and not ready.is_set():
            target._ready = _WakingEvent(selector)
        executor = getattr(target, "user_callback_executor", None)
        if isinstance(executor, ThreadPoolExecutor):
            target.user_callback_executor = _InlineExecutor()
            executor.shutdown(wait=False)  # never used: its thread starts on the first submit
        if isinstance(target, ca_threading.VirtualCircuitManager):
            _answer_error_responses(target)
        add_socket(sock, target)

    selector.add_socket = add_and_wake


_NOTIFY_REQUESTS = (ca.WriteNotifyRequest.ID, ca.ReadNotifyRequest.ID)


def _answer_error_responses(manager: Any) -> None:
    """Hand a CA error message about a put or read with completion to the request's callback.

    An IOC may refuse a put with completion (or a read) with an ERROR message that quotes the
    request instead of answering it: caproto's server does so for every exception in a write
    handler (a value beyond its control limits, a read-only PV, a refused value). caproto's
    threading client drops ERROR messages, so the request stayed unanswered: a put to a caproto
    IOC beyond its limits waited the whole timeout and answered 504 (2.0 s, measured), where
    EPICS base's rsrv answers the same refusal at once with an error status (``ECA_PUTFAIL``).
    The circuit's state machine is wrapped: after caproto has processed an ``ErrorResponse``,
    the quoted request's ioid finds its callback, which receives the ``ErrorResponse`` (whose
    ``status`` is the failure) on this same thread, as caproto would hand it an answer. Late
    messages (past the request's deadline) are dropped, as caproto drops late answers.
    """
    circuit = manager.circuit
    process = circuit.process_command

    def process_command(command: Any) -> Any:
        result = process(command)
        if isinstance(command, ca.ErrorResponse):
            _deliver_error(manager, command)
        return result

    circuit.process_command = process_command


def _deliver_error(manager: Any, response: Any) -> None:
    request = response.original_request
    if request.command not in _NOTIFY_REQUESTS:
        log.warning("an IOC refused a request without completion (%s): %s",
                    response.status.name, bytes(response.error_message).split(b"\0")[0])
        return
    info = manager.ioids.pop(request.parameter2, None)
    if info is None:
        return
    deadline = info.get("deadline")
    if deadline is not None and time.monotonic() > deadline:
        return
    event = info.get("event")
    if event is not None:  # a blocking caproto call waits for it (the bridge makes none)
        info["response"] = response
        event.set()
    callback = info.get("callback")
    if callback is not None:
        manager.user_callback_executor.submit(callback, response)


def search(context: Context, names: list[str], found: Any) -> None:
    """Search for ``names`` without making caproto PV objects for them: ``found.put((address,
    names))`` is called on caproto's thread for those an IOC answers.

    A caproto PV costs about 7 KB (six ``threading`` conditions, each with a deque), and unknown
    names are searched for until ``epics_dead_timeout``: 20,000 of them held 150 MB of a worker,
    and most of it stayed with the allocator after they were given up (bench/suite.py case 11).
    The PV is made once a name is found; ``get_pvs`` then takes the address from the search
    result cache this search filled, without another search.
    """
    context.broadcaster.search(found, names)


def search_answered(context: Context, name: str) -> bool:
    """Whether an IOC answered a search for ``name`` recently (caproto's search result cache)."""
    try:
        context.broadcaster.get_cached_search_result(name)
    except KeyError:
        return False
    return True


def cancel_searches(context: Context, names: Iterable[str]) -> None:
    """Stop searching for ``names``: one pass over the unanswered searches for all of them.

    ``SharedBroadcaster.cancel(*names)`` looks each search up in the tuple of names it is given:
    giving up 20,000 names at once took it 20,000 x 20,000 comparisons, under the lock the
    search thread needs too."""
    gone = set(names)
    if not gone:
        return
    broadcaster = context.broadcaster
    with broadcaster._search_lock:
        searches = broadcaster.unanswered_searches
        for search_id in [i for i, item in searches.items() if item[0] in gone]:
            del searches[search_id]


def search_now(context: Context) -> None:
    """Search again for every unconnected name now, rather than at caproto's next retry."""
    context.broadcaster.search_now()


def broadcast_addresses() -> list[str]:
    """The local broadcast addresses (EPICS_CA_AUTO_ADDR_LIST=YES); caproto asks netifaces, and
    without it only the limited broadcast address is known."""
    if getattr(ca._utils, "netifaces", None) is not None:
        return [bcast for _, bcast in ca.get_netifaces_addresses()]
    return ["255.255.255.255"]


# -- channels ------------------------------------------------------------------------------------


def connection_facts(pv: PV) -> tuple[ca.ChannelType, int, Any, str] | None:
    """Native type, element count, access rights and ``host:port`` of a connected PV, read on
    caproto's thread at its connection callback; None if the channel is already gone."""
    channel, circuit = pv.channel, pv.circuit_manager
    if channel is None or circuit is None:
        return None
    address, port = circuit.circuit.address
    return (ca.ChannelType(channel.native_data_type), int(channel.native_data_count),
            pv.access_rights, f"{address}:{port}")


def circuit_of(pv: PV | None) -> Any:
    """The circuit a PV's requests leave on (read requests are bundled per circuit)."""
    return pv.circuit_manager if pv is not None else None


def known(context: Context, names: list[str]) -> set[str]:
    """Which ``names`` caproto already holds a PV object for (released earlier)."""
    with context.pv_cache_lock:
        return {n for n in names if (n, 0) in context.pvs}


def revive(context: Context, pv: PV) -> None:
    """Make a PV that caproto keeps cached, and that the bridge released earlier, connect again.

    caproto's PV objects live as long as their context. After ``go_idle()`` caproto would
    re-create the channel inside its next *blocking* call; the bridge makes no blocking calls,
    so it does the same step here (a CreateChan request on the PV's circuit). A PV whose search
    was cancelled is searched for again.
    """
    if pv.connected:
        return
    if pv._idle and pv.circuit_ready.is_set():
        with pv.component_lock:
            circuit = pv.circuit_manager
            if circuit is not None and not circuit.dead.is_set():
                cid = circuit.circuit.new_channel_id()
                channel = ca.ClientChannel(pv.name, circuit.circuit, cid=cid)
                circuit.channels[cid] = channel
                circuit.pvs[cid] = pv
                pv._idle = False
                try:
                    circuit.send(channel.create(), extra={"pv": pv.name})
                except OSError:
                    pass  # the circuit is dying: caproto reconnects its channels
                return
    circuit = pv.circuit_manager
    if circuit is not None and not circuit.dead.is_set():
        return  # its channel is being created on a live circuit
    with context.pv_cache_lock:
        searching = pv in context.pvs_needing_circuits.get(pv.name, ())
    if not searching:
        context.reconnect([(pv.name, pv.priority)])


def forget(context: Context, pv: PV) -> None:
    """Drop a PV nobody asks for from caproto's cache when it never reached a circuit (so
    unknown names cannot pile up for the worker's lifetime: 1000 unknown names a round grew the
    heap by 5 MB a round, measured). Its search is cancelled by ``cancel_searches``."""
    with context.pv_cache_lock:
        waiting = context.pvs_needing_circuits.get(pv.name)
        if waiting is not None:
            waiting.discard(pv)
            if not waiting:
                context.pvs_needing_circuits.pop(pv.name, None)
        if pv.circuit_manager is None:
            context.pvs.pop((pv.name, pv.priority), None)


# -- monitors ------------------------------------------------------------------------------------


def add_subscription_callback(sub: Any, func: Callable[[Any, Any], None]) -> int:
    """``Subscription.add_callback`` without its check of the callback's signature.

    caproto inspects every callback it is given (``inspect.signature``, for callbacks written
    for its old one-argument form): 60% of the CPU of setting up a monitor, 90 ms for 1000 PVs
    (measured). The bridge's callback has the current form, so it is registered directly, and
    the monitor is asked for when it is the subscription's first callback, as caproto does.
    """
    with sub.callback_lock:
        first = not sub.callbacks
        token: int = CallbackHandler.add_callback(sub, func)
        latest = sub.most_recent_response
    if first:
        sub._subscribe()
    elif latest is not None:
        func(sub, latest)
    return token


def subscription_pending(sub: Any) -> bool:
    """The monitor was asked for but the IOC never got the request (no subscription id)."""
    return sub.subscriptionid is None


# -- the watchdog's view -------------------------------------------------------------------------


def context_threads(context: Context) -> list[threading.Thread | None]:
    """caproto's threads of ``context``: search results, subscription activation, the circuit
    selector, and the broadcaster's command, selector, retry and unresponsive-server threads."""
    broadcaster = context.broadcaster
    return [
        context._process_search_results_thread,
        context._activate_subscriptions_thread,
        context.selector.thread,
        broadcaster._command_thread,
        broadcaster.selector.thread,
        broadcaster._retry_unanswered_searches_thread,
        broadcaster._check_for_unresponsive_servers_thread,
    ]


def restart_subscription_thread(context: Context) -> None:
    """Start caproto's subscription activation thread again (it died on an exception)."""
    thread = threading.Thread(
        target=context._activate_subscriptions, daemon=True, name="activate_subscriptions"
    )
    context._activate_subscriptions_thread = thread
    thread.start()


def circuit_counts(context: Context) -> tuple[int, int]:
    """Connected circuits and the monitors they carry."""
    circuits = subscriptions = 0
    for circuit in list(context.circuit_managers.values()):
        if circuit.connected:
            circuits += 1
            subscriptions += len(circuit.subscriptions)
    return circuits, subscriptions
