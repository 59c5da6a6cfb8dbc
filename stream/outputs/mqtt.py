"""`--mqtt mqtt://[user:pass@]host:port/prefix`: events, each stream's steady label and the run's availability.

Topics: `{prefix}/events` (every event's JSON record, QoS 1), `{prefix}/{stream}/label` (the steady label as
{"label", "prob", "since_s"}, QoS 1, retained, on change only; an empty retained message clears it when the
stream ends, so a later subscriber sees no stale label), `{prefix}/available` ("online" retained on connect,
"offline" on a clean close, and the same as the broker's last will when the run dies).

The render thread only hands messages to paho's own bounded queue (`publish` takes a lock, never the network);
paho's thread connects, reconnects with backoff, and resends QoS 1 messages not yet acknowledged after a
reconnect, so events published while the broker is down are delivered once it is back.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from stream.decisions.records import Delivery, Event
from stream.errors import UserError
from stream.frames import Steady
from stream.redact import mask_uri, remember

MAX_QUEUED = 10000  # messages paho holds (in flight and waiting): beyond it events are dropped, counted
RECONNECT_S = (1, 8)  # paho's backoff: the first retry after 1 s, doubling to at most 8 s
CLOSE_GRACE_S = 3.0  # how long close() waits for acknowledgements still due
JOIN_S = 2.0  # how long close() waits for paho's thread (a connect attempt may hold it up to its timeout)
KEEPALIVE_S = 15  # a dead link is noticed within about 1.5× this, and then the will is published
PORTS = {"mqtt": 1883, "mqtts": 8883}
USAGE = "use mqtt://[user:pass@]host[:port]/prefix (or mqtts://)"
LEVEL = re.compile(r"[^+#\x00]+")


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str
    tls: bool = False
    username: str | None = None
    password: str | None = None
    shown: str = ""  # the URL with its credentials masked


def parse_mqtt_url(url: str) -> MqttTarget:
    """The broker and topic prefix of a --mqtt URL, or a one-line UserError (the URL shown masked)."""
    shown = mask_uri(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"--mqtt {shown}: {exc}; {USAGE}") from None
    if parts.scheme not in PORTS:
        raise UserError(f"--mqtt {shown}: not an MQTT URL; {USAGE}")
    if not parts.hostname:
        raise UserError(f"--mqtt {shown}: no broker host; {USAGE}")
    if "#" in url:  # a topic wildcard, though urlsplit takes it for the start of a fragment
        raise UserError(f"--mqtt {shown}: '#' is a topic wildcard, not part of a prefix; {USAGE}")
    if parts.query:
        raise UserError(f"--mqtt {shown}: a query has no meaning here; {USAGE}")
    prefix = unquote(parts.path).strip("/")
    if not prefix:
        raise UserError(f"--mqtt {shown}: no topic prefix; {USAGE}")
    if prefix.startswith("$") or not all(LEVEL.fullmatch(level) for level in prefix.split("/")):
        raise UserError(f"--mqtt {shown}: topic prefix {prefix!r} must be levels without '+', '#', empty levels "
                        f"or a leading '$'")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    remember(password)
    return MqttTarget(parts.hostname, port or PORTS[parts.scheme], prefix, parts.scheme == "mqtts", username,
                      password, shown)


class MqttOutput:
    """An EventOutput (stream.decisions.records) publishing to one broker; nothing it does waits on the network."""

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        self.target = t = parse_mqtt_url(url)
        self.name = f"mqtt:{t.shown}"
        self._lock = threading.Lock()
        self._events: set[int] = set()  # mids of events not yet acknowledged
        self._acked_early: set[int] = set()  # acknowledged before publish() returned its mid to us
        self._ours: set[int] = set()  # mids of label and availability messages (not counted as events)
        self.delivered = self.failed = self.dropped = 0
        self.connected = False
        self.closed = False
        self._connects = 0
        self._labels: dict[str, str] = {}  # each live stream's retained label, sent again after a reconnect
        self._ok = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        self._queued = (mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS, mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN)
        self._full = mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stream-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if t.username is not None:
            client.username_pw_set(t.username, t.password)
        if t.tls:
            client.tls_set()
        client.max_queued_messages_set(MAX_QUEUED)
        client.reconnect_delay_set(*RECONNECT_S)
        client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        client.on_connect, client.on_disconnect, client.on_publish = self._on_connect, self._on_disconnect, self._acked
        self.client = client
        # connect_async: the first connection is tried on paho's thread, so a dead broker never holds start-up
        client.connect_async(t.host, t.port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def topic(self, *levels: str) -> str:
        return "/".join((self.target.prefix, *levels))

    def publish(self, event: Event) -> None:
        info = self.client.publish(self.topic("events"), json.dumps(event.record()), qos=1)
        with self._lock:
            if info.rc == self._full:
                self.dropped += 1
            elif info.rc not in self._queued:
                self.failed += 1
            elif info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                self.delivered += 1
            else:
                self._events.add(info.mid)

    def steady(self, stream: str, steady: Steady) -> None:
        state = json.dumps(steady.record())
        with self._lock:
            self._labels[stream] = state
        self._retain(self.topic(stream, "label"), state)

    def stream_gone(self, stream: str) -> None:
        with self._lock:
            self._labels.pop(stream, None)
        self._retain(self.topic(stream, "label"), "")

    def _retain(self, topic: str, payload: str) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            if info.rc not in self._queued:
                return
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._ours.add(info.mid)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return  # paho retries with its backoff; a refused login shows as "disconnected" in the report
        self.connected = True
        self._retain(self.topic("available"), "online")
        if self._connects:  # a broker restarted without persistence has forgotten the retained labels
            with self._lock:
                labels = dict(self._labels)
            for stream, state in labels.items():
                self._retain(self.topic(stream, "label"), state)
        self._connects += 1

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False

    def _acked(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if mid in self._events:
                self._events.discard(mid)
                if reason_code.is_failure:  # MQTT 5 only: the broker refused it
                    self.failed += 1
                else:
                    self.delivered += 1
            elif mid in self._ours:
                self._ours.discard(mid)
            else:
                self._acked_early.add(mid)

    def delivery(self) -> Delivery:
        with self._lock:
            return Delivery(self.name, self.delivered, self.failed, self.dropped, len(self._events),
                            "connected" if self.connected else "disconnected")

    def close(self) -> None:
        """"offline" published, acknowledgements awaited (while connected) for at most CLOSE_GRACE_S, then
        disconnected; events still unacknowledged stay counted as pending."""
        if self.closed:
            return
        self.closed = True
        if self.connected:
            self._retain(self.topic("available"), "offline")
        deadline = time.monotonic() + CLOSE_GRACE_S
        # no wait on a broker that is down: nothing could be acknowledged before paho's next reconnect attempt
        while time.monotonic() < deadline and self.connected and (self._events or self._ours):
            time.sleep(0.05)
        self.client.disconnect()
        # loop_stop joins without a limit; a connect attempt under way could hold it for its whole timeout
        stopper = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(JOIN_S)
        self.connected = False
