"""Defaults for mtango-bridge: every setting's value when nothing else names it.

Plain constants, as in mtango-py, so an operator can read every knob in one place (``conf.py`` at
the top of the repository shows this module). They are only defaults: a YAML file (``--config``),
environment variables (``MTANGO_<NAME>``, plus the standard ``TANGO_HOST`` and ``EPICS_CA_*``)
and command-line flags override them, in that order. Nothing here is read at import time by the
package; ``mtango.config.load_config`` copies these values into one ``Config`` object that is
passed to whoever needs it. They live inside the package so that an installed wheel has them.
"""

# HTTP server
app_base = "/tango/rest"
host = "0.0.0.0"
port = 8000
workers = 2
debug = False
# Seconds a client may take to send the head of a request (counted from the last bytes received),
# and seconds an idle keep-alive connection stays open. Dashboards poll every few seconds and keep
# reusing their connection; a client that connects and says nothing, or stops halfway, holds a
# connection (and a file descriptor) for no longer than this. Sanic's defaults are 60 s and 120 s.
# Behind a proxy that reuses connections, its idle timeout towards the bridge must be shorter than
# http_keep_alive_timeout (README, deployment).
http_request_timeout = 10.0
http_keep_alive_timeout = 15.0

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

# Live values (Tango events, long polling, subscriptions over Server-Sent Events)
# Period (milliseconds) at which the bridge reads an attribute itself when it has no Tango event of
# the kind asked for (not polled by Tango, no change criteria): one read per device and period.
tango_poll_ms = 1000
# A value read may be answered from the attribute's live subscription when its latest event is at
# most this old (milliseconds; a healthy change-event subscription counts as current whatever its
# age). 0: every read asks the device, as rc3 does. Requests override it: ?max_age=ms, ?fresh=1.
tango_max_age_ms = 0
# Seconds an upstream subscription nobody listens to is kept (a page reload finds it still there).
events_linger_s = 10.0
# Events waiting per client (stream or long poll) before newer ones replace older ones of the same
# attribute; a client that stops reading holds at most this many plus one per attribute.
events_queue_size = 256
# Seconds an mTango subscription (/tango/subscriptions) lives with its event stream closed (the
# Java server swept them every 30 minutes), and seconds between heartbeats on an open stream
# (proxies close connections idle for 60 s by default: nginx's proxy_read_timeout).
subscription_idle_s = 60.0
sse_heartbeat_s = 15.0
# Most updates per second a pvws WebSocket client gets of one PV (the latest value always arrives:
# updates in between are coalesced); a client may ask for fewer with ?max_rate=. pvws's own default
# is one a second for scalars and one every 10 s for arrays.
pvws_max_rate_hz = 10.0

# Stopping (SIGTERM: Kubernetes, docker stop, systemd): /health/ready answers 503 at once and the
# bridge serves on for this many seconds, so that load balancers stop sending it new requests and
# streams; then streams get a final "reconnect" event, WebSockets close with 1012, long polls
# answer, and the process exits. 0: stop at once. SIGINT (Ctrl-C) and a second SIGTERM stop at once.
shutdown_drain_s = 5.0

# Proxies in front of the bridge whose X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Host it
# believes (nginx, an ingress: 1). 0: none is believed, the address of a request is its socket's
# peer (a client could otherwise write any address into the audit log). With 1, the audit log
# and the error log name the client the proxy saw, and links follow the proxy's scheme and host
# (https behind a proxy that terminates TLS).
proxies_count = 0

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

# Who may do what (mtango/security). Safe by default: nothing is ever written unless writes are
# "on"; with auth "basic" users (and their roles) come from users_file; reads stay anonymous unless
# read_access is "authenticated". Every write attempt is one JSON line in audit_log (a file path;
# empty: the standard error stream).
auth = "none"  # "none" or "basic" (HTTP Basic, and Bearer tokens of the users file)
auth_realm = "mtango-bridge"
users_file = ""
writes = "off"  # "off" or "on"
read_access = "anonymous"  # "anonymous" or "authenticated"
audit_log = ""

# EPICS Channel Access (the /epics/rest/v1 API)
# Where the bridge searches for PVs: "host" or "host:port" entries, as EPICS_CA_ADDR_LIST.
# Empty (and no auto list): EPICS is not configured, no CA traffic is sent, and the EPICS
# endpoints answer 503 EPICS_NOT_CONFIGURED (main.py serves a demo IOC instead when it also serves
# the Tango demo).
epics_ca_addr_list: list[str] = []
# Also broadcast searches on every local interface (EPICS's own default is YES; ours is NO, so the
# bridge only contacts the addresses listed above unless told otherwise).
epics_ca_auto_addr_list = False
# Port of address-list entries that do not name one (EPICS_CA_SERVER_PORT).
epics_ca_server_port = 5064
# Largest array the bridge reads (EPICS_CA_MAX_ARRAY_BYTES); bigger ones need ?count=N.
epics_ca_max_array_bytes = 16384
# How long a request waits for a PV to connect, and for an IOC to answer a read (milliseconds).
epics_connect_timeout_ms = 2000
epics_read_timeout_ms = 2000
# First retry of an unanswered search (milliseconds; later ones back off, doubling up to 5 s).
# caproto's default, 30 ms, re-sent a third of a 1000-PV search while the worker was still busy
# reading the first answers (caproto's CAPROTO_CLIENT_MIN_RETRY_SEARCHES_INTERVAL_SEC).
epics_search_retry_ms = 250
# A monitored value younger than this is served without asking the IOC (?max_age=, ?fresh=1).
# A monitor pushes every change beyond its deadband, so its value stays current while the circuit
# lives (CA checks that every EPICS_CA_CONN_TMO, 30 s); the re-read after max_age also catches
# changes a deadband (MDEL) held back.
epics_max_age_ms = 30000
# Seconds without requests after which a channel and its monitor are released (ca-gateway's
# inactive timeout), and after which the search for a PV that never connected is cancelled.
epics_idle_timeout = 600.0
epics_dead_timeout = 60.0
# Seconds the control metadata of a PV (units, limits, enum strings) stays cached.
epics_metadata_ttl = 60.0
# Most PVs one batch request may name.
epics_batch_max = 10000
# Most PV names one worker may be searching for at once (unconnected channels); a request that
# would open more gets 503 EPICS_TOO_MANY_SEARCHES for the extra names. Measured: 20,000 names
# searching cost a worker three times its idle CPU (caproto re-sends every unanswered search).
epics_max_searching = 5000
# PV-name rules, regular expressions matched against the whole name (like a ca-gateway .pvlist):
# a name is served when it matches an allow pattern and no deny pattern; others answer 403.
epics_allow: list[str] = [".*"]
epics_deny: list[str] = []
