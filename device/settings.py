"""The one settings table of Glimpse, and how its layers are read.

Each :class:`Setting` has a name, a default, a type and a help text; the table
drives validation, ``--help``, ``glimpse config`` and ``docs/configuration.md``.
Layers, later ones winning: defaults < ``/etc/glimpse/glimpse.conf`` <
``GLIMPSE_*`` environment < command line. A bad value stops start-up with a
message that names the key and where the value came from.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from device import datadir
from device.errors import SettingInvalid

#: Where the daemon looks for its configuration file.
CONFIG_FILE = Path("/etc/glimpse/glimpse.conf")
ENV_PREFIX = "GLIMPSE_"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the settings table.

    Attributes:
        name: the key (``snake_case``); also ``GLIMPSE_<NAME>`` and ``--name-with-dashes``.
        default: the value when no layer sets it.
        type: ``str``, ``int``, ``float``, ``bool`` or ``path``.
        help: one line for ``--help`` and the docs.
        choices: allowed values, when the set is closed.
        minimum, maximum: bounds for numbers.
    """

    name: str
    default: Any
    type: str
    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any, source: str) -> Any:
        """Convert ``raw`` (text from a file or the environment, or a Python value)
        to this setting's type and check it.

        Raises:
            SettingInvalid: naming the key, the source and what is allowed.
        """
        try:
            value = _PARSERS[self.type](raw)
        except (TypeError, ValueError):
            raise SettingInvalid(
                f"setting {self.name} from {source}: {raw!r} is not a valid {self.type}") from None
        if self.choices and value not in self.choices:
            raise SettingInvalid(
                f"setting {self.name} from {source}: {raw!r} is not one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise SettingInvalid(f"setting {self.name} from {source}: {value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise SettingInvalid(f"setting {self.name} from {source}: {value} is above the maximum {self.maximum}")
        return value


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, (str, Path)):
        raise TypeError(raw)
    return str(raw)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _parse_str,
    "path": lambda raw: str(Path(_parse_str(raw)).expanduser()) if str(raw) else "",
    "int": lambda raw: int(str(raw).strip()) if not isinstance(raw, bool) else int("x"),
    "float": lambda raw: float(str(raw).strip()),
    "bool": _parse_bool,
}

#: The settings table. Keep it sorted by topic; docs/configuration.md is made from it.
SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", datadir.DEFAULT_DATA_DIR, "path",
            "Data directory: versioned bundles under bundles/ and the `current` link to the one served."),
    Setting("bundle", "", "path",
            "Serve this bundle directory instead of DATA_DIR/current (no link switching)."),
    Setting("host", "127.0.0.1", "str", "Address the web server listens on (0.0.0.0 for the whole network)."),
    Setting("port", 8080, "int", "TCP port of the web server.", minimum=1, maximum=65535),
    Setting("threads", 4, "int", "Request threads; 2-4 suit a Raspberry Pi's 4 cores.", minimum=1, maximum=64),
    # Limits of the web server (device/server.py): a client on the LAN can neither
    # exhaust memory with a huge request nor hold the request threads by sending slowly.
    Setting("max_request_line", 8192, "int",
            "Longest request line (method and URL) in bytes; longer ones get 414. "
            "Leave room for max_query_chars percent-encoded (up to 12 bytes a character).",
            minimum=1024, maximum=1_048_576),
    Setting("max_request_headers", 32768, "int",
            "Most bytes of the request line and header fields together; more get 431.",
            minimum=4096, maximum=1_048_576),
    Setting("max_connections", 100, "int",
            "Open client connections; more wait in the listen queue until one closes.",
            minimum=8, maximum=1000),
    Setting("request_header_timeout", 15.0, "float",
            "Seconds a client has from the first byte of a request to the end of its headers; "
            "then the connection is closed (slow clients cannot keep it).",
            minimum=1.0, maximum=300.0),
    Setting("client_timeout", 60.0, "float",
            "Seconds a connection may stay silent (idle keep-alive, a stalled upload) before it is closed.",
            minimum=1.0, maximum=3600.0),
    Setting("model_threads", 1, "int", "Threads of the text tower's interpreter.", minimum=1, maximum=16),
    Setting("verify", "quick", "str",
            "Bundle check at start-up: quick hashes all but thumbnails, previews and embeddings "
            "(checked by size), so a large bundle starts fast; full hashes every file. "
            "A reload always verifies the new bundle in full.",
            choices=("full", "quick")),
    Setting("page_size", 24, "int", "Results per page in the web UI.", minimum=1, maximum=200),
    Setting("max_query_chars", 500, "int", "Longest query accepted, in characters.", minimum=10, maximum=10000),
    Setting("default_min_score", 0.0, "float",
            "Results below this cosine score are hidden unless the user sets another threshold.",
            minimum=-1.0, maximum=1.0),
    Setting("admin_token_sha256", "", "str",
            "sha256 (hex) of the admin token; admin API calls need `Authorization: Bearer TOKEN`. "
            "Empty: the token in DATA_DIR/admin-token.sha256 (see admin_token_first_start), and without one "
            "admin calls are accepted from this device only (any loopback address, 127.0.0.0/8 or ::1); "
            "once a token is set, every admin call needs it, from this device too."),
    Setting("admin_token_first_start", True, "bool",
            "When serving DATA_DIR/current with no admin token (neither admin_token_sha256 nor "
            "DATA_DIR/admin-token.sha256), the first start makes one: it is printed once to the log and shown "
            "on the display and the kiosk until the first admin call uses it; only its sha256 is kept. "
            "`glimpse admin-token --reset` makes a new one. False: no token until you make one."),
    Setting("admin_max_failures", 5, "int",
            "Wrong admin tokens a client address may send within admin_failure_window; after that its admin "
            "calls get 429 with Retry-After until the oldest failure is that old.", minimum=1, maximum=1000),
    Setting("admin_failure_window", 60.0, "float",
            "Seconds a wrong admin token counts against its client address.", minimum=1.0, maximum=86400.0),
    Setting("trusted_hosts", "", "str",
            "Other names the appliance is reached by in a browser, separated by commas (e.g. glimpse.home), "
            "besides its IP addresses, localhost and its host name (with .local): a form or script on a "
            "page under any other name may not change anything (CSRF and DNS-rebinding defence)."),
    # The front panel and the kiosk (docs/kiosk.md). Every part is optional: an unset pin
    # or display means there is none, and the daemon serves as before.
    Setting("button_pin", "", "str",
            "GPIO of the front button (BCM number such as 17, or a gpiozero name such as GPIO17 or BOARD11); "
            "empty: no button."),
    Setting("button_hold_time", 3.0, "float",
            "Seconds the button must be held to ask for a shutdown.", minimum=0.01, maximum=60.0),
    Setting("button_bounce_time", 0.05, "float",
            "Debounce: edges closer than this many seconds after a change are ignored (0: none).",
            minimum=0.0, maximum=1.0),
    Setting("button_pull_up", True, "bool",
            "The button connects its pin to ground (internal pull-up); false: to 3V3 (pull-down)."),
    Setting("button_hold", "auto", "str",
            "What holding the button does: shutdown (run shutdown_command), camera (take a photo and show "
            "the most similar ones), or auto (camera when there is a camera, else shutdown).",
            choices=("auto", "shutdown", "camera")),
    Setting("camera", "none", "str",
            "Camera for \"What is this like?\": picamera2 (a Raspberry Pi camera module; "
            "apt install python3-picamera2), or none.", choices=("none", "picamera2")),
    Setting("shutdown_command", "", "str",
            "Command run when the button is held, split like a shell line but run without one, "
            "e.g. `systemctl poweroff` (its program must be found at start-up); "
            "empty: holding the button does nothing."),
    Setting("saved_queries", "a sunset|a dog|food on a plate|the sea|a city at night|flowers", "str",
            "'Surprise me' queries the button runs in turn when nobody has searched, separated by | "
            "(or by commas when there is no |); empty: the button only steps through results."),
    Setting("led_pin", "", "str",
            "Status LED: one GPIO, or three separated by commas (red,green,blue) for an RGB LED; empty: no LED."),
    Setting("led_active_high", True, "bool",
            "The LED lights when its pin is high; false for LEDs wired to 3V3 and common-anode RGB LEDs."),
    Setting("display", "none", "str", "Small display on the Pi's I2C (OLED) or SPI (LCD) bus.",
            choices=("none", "ssd1306", "sh1106", "st7735", "ili9341")),
    Setting("display_size", "", "str",
            "Display size WIDTHxHEIGHT in pixels, e.g. 128x32; empty: the model's usual size "
            "(128x64, 128x64, 160x128, 320x240)."),
    Setting("display_rotate", 0, "int", "Turn the picture by this many quarter turns clockwise.",
            minimum=0, maximum=3),
    Setting("display_i2c_address", "0x3C", "str", "I2C address of an OLED (ssd1306, sh1106) on bus 1."),
    Setting("display_spi_device", 0, "int", "SPI chip select of an LCD (st7735, ili9341) on bus 0: 0 (CE0) or 1 (CE1).",
            minimum=0, maximum=1),
    Setting("display_dc_pin", 24, "int", "GPIO (BCM) wired to the LCD's D/C line.", minimum=0, maximum=27),
    Setting("display_reset_pin", 25, "int", "GPIO (BCM) wired to the LCD's RST line.", minimum=0, maximum=27),
    Setting("display_fps", 2.0, "float",
            "Most display redraws per second; a redraw happens only when something changed.",
            minimum=0.1, maximum=30.0),
    Setting("slideshow_results", 12, "int",
            "Results of a search the button and the kiosk page step through.", minimum=1, maximum=200),
    Setting("kiosk_interval", 8.0, "float",
            "Seconds each photo stays on the kiosk page (/kiosk) before the next.", minimum=1.0, maximum=3600.0),
    Setting("shutdown_timeout", 10.0, "float",
            "Seconds SIGTERM waits for requests in flight before exiting.", minimum=0.0, maximum=300.0),
    Setting("ingest", "auto", "str",
            "Adding photos on the device (upload, watched folder, glimpse ingest): on, off, or auto "
            "(on when serving DATA_DIR/current, off with an explicit --bundle). State lives in DATA_DIR.",
            choices=("auto", "on", "off")),
    Setting("watch_dir", "", "path",
            "A folder to watch for new photos (a USB stick's mount point, a network share); empty: none."),
    Setting("watch_interval", 10.0, "float", "Seconds between two scans of the watched folder.",
            minimum=1.0, maximum=3600.0),
    Setting("max_upload_mb", 50, "int",
            "Largest request body accepted, in megabytes (all files of one upload); larger ones get 413.",
            minimum=1, maximum=2048),
    Setting("decode_budget_mb", 0, "int",
            "Most memory decoding one added photo may take, in MiB; a photo estimated to need more "
            "(a huge PNG: Pillow decodes it whole) is refused with the reason. 0: 0.4 times the memory the "
            "unit may use (its cgroup memory.max, systemd's MemoryMax, else the machine's RAM).",
            minimum=0, maximum=65536),
    Setting("ingest_max_attempts", 3, "int",
            "Times the worker may start on one photo; a photo in hand when the daemon died this many "
            "times (killed for memory...) is quarantined with the reason, never tried again.",
            minimum=1, maximum=100),
    Setting("ingest_queue_max", 1000, "int",
            "Photos waiting to be embedded before uploads are refused with 503 (try again later).",
            minimum=1, maximum=1_000_000),
    # Being found on the LAN by name and joining Home Assistant (docs/appliance.md).
    Setting("advertise", "auto", "str",
            "Announce the web UI on the LAN by mDNS (_http._tcp; http://HOSTNAME.local:PORT/) from the daemon "
            "itself (python-zeroconf): on, off, or auto (only when no avahi-daemon runs: push --install gives "
            "avahi a service file instead). Never for a server that listens on loopback only.",
            choices=("auto", "on", "off")),
    Setting("mqtt_host", "", "str",
            "MQTT broker for the Home Assistant bridge (host name or address); empty: no bridge."),
    Setting("mqtt_port", 1883, "int", "TCP port of the MQTT broker (usually 1883, or 8883 with TLS).",
            minimum=1, maximum=65535),
    Setting("mqtt_tls", False, "bool", "Connect to the broker over TLS, checking its certificate."),
    Setting("mqtt_ca_file", "", "path",
            "CA certificates (PEM) that sign the broker's certificate, with mqtt_tls; empty: the system's."),
    Setting("mqtt_username", "", "str", "User name at the MQTT broker; empty: connect anonymously."),
    Setting("mqtt_password", "", "str",
            "Password at the MQTT broker. Never logged; `glimpse config` shows (set). Put it in the "
            "configuration file (mode 0640), not on a command line others can read."),
    Setting("mqtt_discovery_prefix", "homeassistant", "str",
            "Topic prefix Home Assistant reads discovery configs under (its MQTT integration's setting)."),
    Setting("mqtt_node_id", "", "str",
            "This Glimpse's id in MQTT topics and Home Assistant unique ids (letters, digits, _ and -); "
            "empty: the host name."),
    Setting("mqtt_state_interval", 30.0, "float",
            "Seconds between two state updates to the broker (they are also sent on every change).",
            minimum=1.0, maximum=3600.0),
    Setting("log_level", "info", "str", "Log level.", choices=("debug", "info", "warning", "error")),
)

BY_NAME = {s.name: s for s in SETTINGS}
#: Settings whose values are never printed or logged (``glimpse config`` shows "(set)").
SECRETS = frozenset({"admin_token_sha256", "mqtt_password"})


@dataclasses.dataclass
class Settings:
    """Effective settings: ``values[name]`` and ``sources[name]`` (where each came from)."""

    values: dict
    sources: dict

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def bundle_dir(self) -> Path:
        """The bundle to serve: ``bundle`` if set, else ``data_dir/current``."""
        return Path(self.values["bundle"]) if self.values["bundle"] else datadir.current_link(self.values["data_dir"])


def load(cli: dict | None = None, env: dict | None = None, config_file: Path | None = None) -> Settings:
    """Read every layer and return the effective :class:`Settings`.

    Args:
        cli: values given on the command line (``None`` values are ignored).
        env: the environment (default ``os.environ``).
        config_file: the configuration file (default ``GLIMPSE_CONFIG`` or
            ``/etc/glimpse/glimpse.conf``). A file named here (``--config``) must
            exist; the default or ``GLIMPSE_CONFIG``'s may be absent (no settings).

    Raises:
        SettingInvalid: a bad value or unknown key, naming key and source, or a
            configuration file that was asked for and is missing.
    """
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}
    path = Path(config_file or env.get(ENV_PREFIX + "CONFIG") or CONFIG_FILE)
    for name, raw in _read_config_file(path, required=bool(config_file)).items():
        values[name] = BY_NAME[name].parse(raw, f"{path}")
        sources[name] = str(path)
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = setting.parse(env[setting.env], f"environment {setting.env}")
            sources[setting.name] = f"environment {setting.env}"
    for name, raw in (cli or {}).items():
        if raw is None:
            continue
        if name not in BY_NAME:
            raise SettingInvalid(f"unknown setting {name!r} on the command line")
        values[name] = BY_NAME[name].parse(raw, f"command line {BY_NAME[name].flag}")
        sources[name] = f"command line {BY_NAME[name].flag}"
    return Settings(values, sources)


def _read_config_file(path: Path, required: bool = False) -> dict:
    """``key = value`` lines of the ``[glimpse]`` section (the header may be omitted);
    nothing for a missing file unless it is ``required``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise SettingInvalid(f"{path}: no such configuration file") from None
        return {}
    except OSError as exc:
        raise SettingInvalid(f"cannot read {path}: {exc.strerror}") from None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text if text.lstrip().startswith("[") else "[glimpse]\n" + text, source=str(path))
    except configparser.Error as exc:
        raise SettingInvalid(f"{path}: not a valid configuration file: {exc}") from None
    found = {}
    for section in parser.sections():
        if section != "glimpse":
            raise SettingInvalid(f"{path}: unknown section [{section}] (settings go under [glimpse])")
        for key, raw in parser.items(section):
            if key not in BY_NAME:
                raise SettingInvalid(f"{path}: unknown setting {key!r}")
            found[key] = raw
    return found


def add_arguments(parser, names: tuple[str, ...]) -> None:
    """Add ``--flag`` options for ``names`` to an argparse parser (defaults left to :func:`load`)."""
    for name in names:
        setting = BY_NAME[name]
        default = setting.default if setting.default != "" else "unset"
        kwargs = {"dest": name, "default": None, "metavar": setting.type.upper(),
                  "help": f"{setting.help} (default {default}; env {setting.env})"}
        if setting.choices:
            kwargs["choices"] = setting.choices
            kwargs.pop("metavar")
        parser.add_argument(setting.flag, **kwargs)


def describe(settings: Settings) -> str:
    """``glimpse config``: every effective setting and where it came from."""
    width = max(len(s.name) for s in SETTINGS)
    lines = []
    for setting in SETTINGS:
        value = settings.values[setting.name]
        shown = "(set)" if setting.name in SECRETS and value else value
        lines.append(f"{setting.name:<{width}} = {shown!s:<24} # {settings.sources[setting.name]}")
    return "\n".join(lines)


def markdown() -> str:
    """The body of ``docs/configuration.md``, made from the table."""
    rows = "\n".join(
        f"| `{s.name}` | `{s.env}` | `{s.flag}` | {s.type}"
        f"{' (' + ', '.join(map(str, s.choices)) + ')' if s.choices else ''}"
        f"{_bounds(s)} | `{s.default!s}` | {s.help} |"
        for s in SETTINGS
    )
    return f"""# Configuration

Glimpse reads its settings in layers, each overriding the one before:

1. the defaults below;
2. the file `/etc/glimpse/glimpse.conf` (another with `GLIMPSE_CONFIG=PATH` or `--config PATH`): `key = value`
   lines, optionally under a `[glimpse]` header. The default file and `GLIMPSE_CONFIG`'s may be absent (no
   settings from a file); a file named with `--config` must exist, or the command stops with an error;
3. the environment: `GLIMPSE_<KEY>`;
4. the command line of `glimpse serve`: `--key-with-dashes VALUE`.

`glimpse config` prints the effective value of every setting and where it came from. A bad value or an
unknown key stops start-up with a message naming the key and its source.

Booleans accept 1/0, true/false, yes/no, on/off.

| key | environment | flag | type | default | meaning |
|---|---|---|---|---|---|
{rows}

This file is generated from `device/settings.py` (`python -m device.settings > docs/configuration.md`);
a test checks that it is current.
"""


def _bounds(setting: Setting) -> str:
    if setting.minimum is None and setting.maximum is None:
        return ""
    return f", {setting.minimum:g}..{setting.maximum:g}"


if __name__ == "__main__":
    print(markdown(), end="")
