"""The Home Assistant bridge: Glimpse as a device in Home Assistant, over MQTT.

Optional (setting ``mqtt_host``; ``pip install 'glimpse[lan]'`` for paho-mqtt).
It publishes Home Assistant MQTT discovery configs, so the appliance appears
with no YAML:

* sensors: photos in the bundle, added photos, queries per minute, the last
  query shown, the status (``ready``, ``reload refused``...);
* a text entity ``Show photos of``: a query written to it is searched and shown
  on the kiosk page and the display (:meth:`device.daemon.Daemon.show`);
* a button ``Surprise me``: the next saved query, as the front button runs it;
* availability: ``online`` once connected, ``offline`` by the broker's last
  will when the daemon vanishes (and by the daemon itself when it stops).

paho-mqtt's network thread connects in the background and reconnects after
the broker goes away; on every (re)connection the configs, the availability and
the state are published again, as Home Assistant expects after a broker restart.
The password is handed to paho only, never logged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections import deque

from device.errors import BridgeInvalid, GlimpseError
from device.wording import plural

log = logging.getLogger("glimpse.home_assistant")

#: Written to the availability topic (retained).
ONLINE, OFFLINE = "online", "offline"
#: The button's press payload (Home Assistant's default).
PRESS = "PRESS"
#: Home Assistant's text entities hold at most 255 characters.
TEXT_MAX = 255


@dataclasses.dataclass(frozen=True)
class BridgeOptions:
    """The MQTT settings, parsed.

    Attributes:
        host, port: the broker.
        tls: connect over TLS; ca_file: CA certificates to check the broker with ("" = the system's).
        username, password: credentials ("" = anonymous); the password is kept out of ``repr``.
        discovery_prefix: Home Assistant's discovery prefix.
        node_id: this device's id in topics and unique ids.
        state_interval: seconds between periodic state updates.
    """

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: str = ""
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    discovery_prefix: str = "homeassistant"
    node_id: str = "glimpse"
    state_interval: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> "BridgeOptions":
        """The bridge's options from the settings table.

        Raises:
            BridgeInvalid: ``mqtt_node_id`` (or the host name standing in for it) has other
                characters than letters, digits, ``_`` and ``-``.
        """
        from device.mdns import host_name

        node = settings.mqtt_node_id.strip() or re.sub(r"[^A-Za-z0-9_-]", "_", host_name())
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", node):
            raise BridgeInvalid(f"setting mqtt_node_id: {node!r} may hold only letters, digits, _ and - "
                                "(at most 64), as MQTT topics and Home Assistant ids need")
        prefix = settings.mqtt_discovery_prefix.strip().strip("/")
        if not prefix or any(c in prefix for c in "#+"):
            raise BridgeInvalid(f"setting mqtt_discovery_prefix: {settings.mqtt_discovery_prefix!r} "
                                "is not a topic prefix")
        return cls(host=settings.mqtt_host.strip(), port=settings.mqtt_port, tls=settings.mqtt_tls,
                   ca_file=settings.mqtt_ca_file, username=settings.mqtt_username,
                   password=settings.mqtt_password, discovery_prefix=prefix, node_id=node,
                   state_interval=settings.mqtt_state_interval)

    @property
    def base(self) -> str:
        """This device's own topics start here: ``glimpse/NODE_ID``."""
        return f"glimpse/{self.node_id}"

    @property
    def broker(self) -> str:
        """``host:port`` of the broker, for logs (no credentials)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Topics:
    """The topics of one device."""

    def __init__(self, options: BridgeOptions):
        base = options.base
        self.availability = f"{base}/availability"
        self.state = f"{base}/state"
        self.query_set = f"{base}/query/set"
        self.query = f"{base}/query"
        self.surprise = f"{base}/surprise/press"
        self._prefix, self._node = options.discovery_prefix, options.node_id

    def config(self, component: str, object_id: str) -> str:
        """Where Home Assistant reads the discovery config of one entity."""
        return f"{self._prefix}/{component}/{self._node}/{object_id}/config"


#: The sensors: (object id, name, key in the state JSON, extra config).
SENSORS = (
    ("photos", "Photos", "photos", {"icon": "mdi:image-multiple", "state_class": "measurement",
                                    "unit_of_measurement": "photos"}),
    ("added_photos", "Added photos", "added_photos", {"icon": "mdi:image-plus", "state_class": "measurement",
                                                      "unit_of_measurement": "photos"}),
    ("queries_per_minute", "Queries per minute", "queries_per_minute",
     {"icon": "mdi:magnify", "state_class": "measurement", "unit_of_measurement": "queries/min"}),
    ("last_query", "Last query", "last_query", {"icon": "mdi:text-search"}),
    ("status", "Status", "status", {"icon": "mdi:information-outline"}),
)


def discovery_configs(options: BridgeOptions, *, version: str, url: str, max_query_chars: int) -> dict[str, dict]:
    """Every discovery config, by topic (published retained)."""
    topics = Topics(options)
    device = {"identifiers": [f"glimpse_{options.node_id}"], "name": f"Glimpse {options.node_id}",
              "manufacturer": "Glimpse", "model": "Offline photo search", "sw_version": version,
              "configuration_url": url}
    common = {"availability_topic": topics.availability, "payload_available": ONLINE,
              "payload_not_available": OFFLINE, "device": device}
    configs = {}
    for object_id, name, key, extra in SENSORS:
        configs[topics.config("sensor", object_id)] = {
            "name": name, "unique_id": f"glimpse_{options.node_id}_{object_id}",
            "object_id": f"glimpse_{options.node_id}_{object_id}",
            "state_topic": topics.state, "value_template": f"{{{{ value_json.{key} }}}}", **extra, **common}
    configs[topics.config("text", "query")] = {
        "name": "Show photos of", "unique_id": f"glimpse_{options.node_id}_query",
        "object_id": f"glimpse_{options.node_id}_query", "icon": "mdi:image-search",
        "command_topic": topics.query_set, "state_topic": topics.query,
        "min": 0, "max": min(TEXT_MAX, max_query_chars), "mode": "text", **common}
    configs[topics.config("button", "surprise")] = {
        "name": "Surprise me", "unique_id": f"glimpse_{options.node_id}_surprise",
        "object_id": f"glimpse_{options.node_id}_surprise", "icon": "mdi:dice-5",
        "command_topic": topics.surprise, "payload_press": PRESS, **common}
    return configs


class QueryRate:
    """Queries per minute over the last minute, from a growing total."""

    def __init__(self, window: float = 60.0, clock=time.monotonic):
        self.window, self._clock = window, clock
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, total: float) -> float:
        """Record ``total`` now; the rate since the oldest sample in the window, per minute."""
        now = self._clock()
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        start, first = self._samples[0]
        span = now - start
        return round((total - first) / span * 60.0, 1) if span > 0 else 0.0


class HomeAssistantBridge:
    """Connects the daemon to an MQTT broker for Home Assistant (see the module docstring).

    Args:
        daemon: the :class:`device.daemon.Daemon` being served (``show``, ``status``, ``slideshow``, ``panel``).
        options: the broker and ids.
        url: the web UI's address (the device's ``configuration_url`` in Home Assistant).

    Raises:
        GlimpseError: paho-mqtt is not installed.
    """

    def __init__(self, daemon, options: BridgeOptions, url: str = ""):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise GlimpseError("the Home Assistant bridge needs paho-mqtt: pip install 'glimpse[lan]' "
                               "(or unset mqtt_host)") from None
        from device import __version__

        self.daemon, self.options, self.topics = daemon, options, Topics(options)
        self._configs = discovery_configs(options, version=__version__, url=url,
                                          max_query_chars=daemon.settings.max_query_chars)
        self._rate = QueryRate()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._status_note = ""
        #: Times the bridge (re)connected, for /api/status and tests.
        self.connections = 0
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"glimpse-{options.node_id}",
                             protocol=mqtt.MQTTv311)
        if options.username:
            client.username_pw_set(options.username, options.password or None)
        if options.tls:
            client.tls_set(ca_certs=options.ca_file or None)
        # The broker tells Home Assistant we are gone when the connection drops without a goodbye.
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._failures = 0
        #: Why the last connection attempt failed ("" once connected).
        self.error = ""
        client.message_callback_add(self.topics.query_set, self._on_query)
        client.message_callback_add(self.topics.surprise, self._on_surprise)
        self._client = client

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self._connected.is_set()

    def describe(self) -> dict:
        """For ``/api/status``: the broker, the node id, whether connected (no credentials)."""
        return {"broker": self.options.broker, "node_id": self.options.node_id, "connected": self.connected,
                "connections": self.connections, "error": self.error or None}

    def start(self) -> None:
        """Connect in the background (never waits for the broker) and publish state changes."""
        tls = " over TLS" if self.options.tls else ""
        who = f" as {self.options.username}" if self.options.username else ""
        log.info("Home Assistant bridge: connecting to %s%s%s", self.options.broker, tls, who)
        self._client.connect_async(self.options.host, self.options.port, keepalive=30)
        self._client.loop_start()  # paho's thread: connects, and reconnects with backoff
        self.daemon.slideshow.listen(lambda showing: self._changed.set())
        self._thread = threading.Thread(target=self._publish_loop, name="home-assistant", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (when connected), disconnect and stop the threads."""
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.connected:
            try:
                self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True).wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:  # the connection dropped meanwhile: the will says it
                log.debug("Home Assistant bridge: offline not sent: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    # --- paho's network thread ----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # Wrong credentials or a refused client: paho tries again with backoff. Said once as an
            # error, then at debug level; /api/status shows it from the moment the journal has it.
            self._failures += 1
            log.log(logging.ERROR if self._failures == 1 else logging.DEBUG,
                    "Home Assistant bridge: %s refused the connection: %s", self.options.broker, reason_code)
            self.error = f"the broker refused the connection: {reason_code}"
            return
        self.connections += 1
        self._failures = 0
        self.error = ""
        log.info("Home Assistant bridge: connected to %s; publishing discovery for node %s",
                 self.options.broker, self.options.node_id)
        for topic, config in self._configs.items():
            client.publish(topic, json.dumps(config), qos=1, retain=True)
        client.subscribe([(self.topics.query_set, 1), (self.topics.surprise, 1)])
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self._connected.set()
        self._changed.set()  # the state, now

    def _on_connect_fail(self, client, userdata) -> None:
        # No answer, no TLS handshake (a certificate mqtt_ca_file does not trust): paho retries.
        # Said once as a warning, then at debug level, so an absent broker does not fill the journal.
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "Home Assistant bridge: cannot connect to %s%s; retrying", self.options.broker,
                " (is the broker up? with TLS, does mqtt_ca_file sign its certificate?)" if self.options.tls else
                " (is the broker up?)")
        self.error = "cannot connect"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning("Home Assistant bridge: lost %s (%s); reconnecting", self.options.broker, reason_code)

    def _on_query(self, client, userdata, message) -> None:
        query = message.payload.decode("utf-8", "replace").strip()
        if not query:
            return
        try:
            showing = self.daemon.show(query)
        except GlimpseError as exc:
            log.warning("Home Assistant bridge: query %r refused: %s", query[:100], exc)
            self._status_note = f"query refused: {exc}"[:TEXT_MAX]
            self._changed.set()
            return
        self._status_note = ""
        log.info("Home Assistant bridge: showing %s for %r", plural(len(showing.results), "photo"), query[:100])
        client.publish(self.topics.query, query[:TEXT_MAX], qos=1, retain=True)

    def _on_surprise(self, client, userdata, message) -> None:
        if message.payload.decode("utf-8", "replace") != PRESS:
            return
        panel = self.daemon.panel
        if panel is None:
            return  # not serving (yet, or any more)
        panel.post("surprise")  # the panel's thread runs the next saved query, as the button does

    # --- the bridge's own thread --------------------------------------------------------

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.options.state_interval)
            self._changed.clear()
            if self._stop.is_set():
                break
            if not self.connected:
                continue
            try:
                self._client.publish(self.topics.state, json.dumps(self.state()), qos=0, retain=True)
            except Exception:  # noqa: BLE001 - a bad update must not end the updates
                log.exception("Home Assistant bridge: publishing the state failed")

    def state(self) -> dict:
        """The sensors' values (the state topic's JSON)."""
        daemon = self.daemon
        searcher = daemon.serving
        added = 0
        if daemon.delta is not None and searcher is not None:
            added = sum(1 for item in daemon.delta.items if item.id not in searcher.bundle)
        status = self._status_note or getattr(daemon, "state", "ready")
        return {
            "photos": len(searcher.bundle) if searcher is not None else 0,
            "added_photos": added,
            "queries_per_minute": self._rate.update(daemon.metrics.total_queries()),
            "last_query": daemon.slideshow.snapshot().query[:TEXT_MAX],
            "status": status,
        }


def open_bridge(daemon, url: str) -> HomeAssistantBridge | None:
    """The bridge the settings ask for (not yet started), or ``None`` when ``mqtt_host`` is unset.

    Building it touches no network, so start-up checks the settings before READY;
    :meth:`HomeAssistantBridge.start` then connects in the background.

    Raises:
        BridgeInvalid: a setting cannot be meant (a node id, a CA file that cannot be read).
        GlimpseError: paho-mqtt is not installed.
    """
    settings = daemon.settings
    if not settings.mqtt_host.strip():
        return None
    options = BridgeOptions.from_settings(settings)
    try:
        return HomeAssistantBridge(daemon, options, url)
    except (OSError, ValueError) as exc:  # ssl: an unreadable or invalid mqtt_ca_file
        if isinstance(exc, GlimpseError):
            raise
        raise BridgeInvalid(f"setting mqtt_ca_file: {settings.mqtt_ca_file or 'the system CAs'}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
