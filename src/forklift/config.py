"""The one `Config` of a forklift server: every knob, its default, and its validation.

Readers (the command line in `cli.py`, uWSGI ini files) turn strings into this dataclass;
nothing else in forklift reads options. Limits and timeouts all live here with their reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field

from .errors import ConfigError

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_hostname = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")

PROTOCOL_HTTP = "http"
PROTOCOL_UWSGI = "uwsgi"


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS listener is configured with (uWSGI's `https = ADDR,CERT,KEY[,CIPHERS[,CA]]`).

    `ca` asks clients for a certificate signed by it; `require_client_cert` (uWSGI writes the
    CA as `!ca.crt`) refuses clients without one. The files are read by `tls.build_context`
    at start and again by each new generation (a HUP picks up renewed certificates).
    """

    certfile: str
    keyfile: str
    ciphers: str | None = None
    ca: str | None = None
    require_client_cert: bool = False
    key: str = "--https"  # the option it came from, for error messages


def split_https(text: str, key: str = "https") -> tuple[str, TlsFiles]:
    """`ADDR,CERT,KEY[,CIPHERS[,CA]]` into the address text and its TlsFiles."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 3 or len(parts) > 5 or not all(parts[:3]):
        raise ConfigError(f"{key}: expected ADDR,CERT,KEY[,CIPHERS[,CA]], got {text!r}")
    address, certfile, keyfile = parts[:3]
    ciphers = parts[3] if len(parts) > 3 and parts[3] else None
    ca = parts[4] if len(parts) > 4 and parts[4] else None
    required = bool(ca and ca.startswith("!"))
    if ca and required:
        ca = ca[1:]
    return address, TlsFiles(certfile, keyfile, ciphers, ca, required, key)


def tls_paths_absolute(files: TlsFiles) -> TlsFiles:
    """Certificate paths resolved against the directory forklift started in: workers chdir
    to the app, and each generation reads the files again."""
    return dataclasses.replace(
        files,
        certfile=os.path.abspath(files.certfile),
        keyfile=os.path.abspath(files.keyfile),
        ca=os.path.abspath(files.ca) if files.ca else None,
    )


@dataclass(frozen=True)
class ListenAddress:
    """Where to listen and which protocol is spoken there.

    `host` is "" for every IPv4 interface (uWSGI's ":6000"); `path` is set for unix sockets.
    `tls` is set on listeners that terminate TLS themselves (`https`, `--certfile`).
    """

    protocol: str
    host: str = ""
    port: int = 0
    path: str | None = None
    tls: TlsFiles | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def place(self) -> tuple:
        """What identifies a listener across reloads (its socket): all but the TLS files."""
        return (self.protocol, self.host, self.port, self.path)

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def renew_tls(kept: list, fresh: list) -> list:
    """The listeners a reload keeps (their sockets stay), with the TLS files the re-read
    configuration names for the same place: renewed certificates may move."""
    unused = list(fresh)
    renewed = []
    for address in kept:
        # The first unused one: `http = :0` and `https = :0,...` share a place, in order.
        match = next((f for f in unused if f.place == address.place), None)
        if match is not None:
            unused.remove(match)
            if match.tls != address.tls:
                address = dataclasses.replace(address, tls=match.tls)
        renewed.append(address)
    return renewed


def tls_of(index: int, listener_address: ListenAddress, addresses: list):
    """The TLS files of the `index`th listener in a generation's config (which lists the
    listeners in the same order): a HUP may have named new ones."""
    if index < len(addresses) and addresses[index].place == listener_address.place:
        return addresses[index].tls
    return listener_address.tls


def _error(key: str, why: str) -> ConfigError:
    """`key: why`, or just `why` when the caller names the key itself (file, line, value)."""
    return ConfigError(f"{key}: {why}" if key else why)


def parse_address(text: str, protocol: str, key: str = "--http") -> ListenAddress:
    """Parse `host:port`, `:port`, `[v6]:port`, `unix:/path` or a bare `/path` (a unix socket)."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise _error(key, f"empty unix socket path in {text!r}")
        return ListenAddress(protocol, path=path)
    if "/" in text or text.endswith(".sock"):
        return ListenAddress(protocol, path=text)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise _error(key, f"expected [ipv6]:port, got {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
    if host == "*":
        host = ""
    port = port.strip()
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise _error(key, f"bad port in {text!r}")
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _hostname.fullmatch(host):
                raise _error(key, f"bad host in {text!r}") from None
    return ListenAddress(protocol, host=host, port=int(port))


def parse_networks(text: str, key: str) -> tuple:
    """A comma-separated list of IP addresses or CIDR networks; `*` allows every peer."""
    nets = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "*":
            nets.extend((ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _error(key, f"not an IP address or network: {item!r}") from None
    return tuple(nets)


def parse_size(text: str, key: str) -> int:
    """Bytes, with an optional k/m/g suffix (powers of 1024)."""
    t = text.strip().lower()
    mult = 1
    if t and t[-1] in "kmg":
        mult = {"k": 1024, "m": 1024**2, "g": 1024**3}[t[-1]]
        t = t[:-1]
    if not (t.isascii() and t.isdigit()):
        raise _error(key, f"expected a size in bytes (e.g. 65536, 64k, 10m), got {text!r}")
    return int(t) * mult


@dataclass
class Config:
    """Everything a forklift server needs to know; defaults are what an operator gets."""

    # --- what to serve
    app: str | None = None  # "module:callable"
    wsgi_file: str | None = None
    callable: str = "application"
    chdir: str | None = None
    pythonpath: list = field(default_factory=list)
    script_name: str = ""  # --mount /prefix: the app lives under this URL prefix
    preload: bool = False
    env: list = field(default_factory=list)  # "NAME=value" set before the app is imported
    virtualenv: str | None = None  # site-packages put first on sys.path, resolved per worker
    health_check: str | None = None  # GET path each new worker must answer 2xx before traffic
    health_host: str = "localhost"

    # --- where
    listeners: list = field(default_factory=list)
    backlog: int = 1024  # listen(2) queue; the kernel caps it at net.core.somaxconn
    uwsgi_allow_ips: tuple = parse_networks("127.0.0.1,::1", "--uwsgi-allow-ips")
    forwarded_allow_ips: tuple = parse_networks("127.0.0.1,::1", "--forwarded-allow-ips")
    listeners_defaulted: bool = False  # none configured: 127.0.0.1:8000 (or systemd's sockets)
    # TLS on every --http listener, gunicorn style (`https = ...` sets it per listener)
    certfile: str | None = None
    keyfile: str | None = None
    # PROXY protocol v1/v2 header expected first on every listener, only from these peers
    proxy_protocol: bool = False
    proxy_allow_ips: tuple = parse_networks("127.0.0.1,::1", "--proxy-allow-ips")

    # --- concurrency
    processes: int = 1
    threads: int = 1

    # --- HTTP limits (RFC 9112 gives no numbers; these match what nginx and gunicorn accept)
    max_request_line: int = 8192  # -> 414
    max_header_bytes: int = 65536  # -> 431
    max_header_fields: int = 100  # -> 431
    max_body_size: int = 0  # limit-post; 0 = no limit -> 413 when exceeded
    buffer_size: int = 4096  # uwsgi packet (vars) size, as uWSGI's buffer-size
    # The loop reads whole request bodies before the app runs: this many bytes in memory,
    # the rest in a temporary file (uWSGI's post-buffering; 0: the app streams the body).
    post_buffering: int = 65536
    stream_request_body: bool = False  # the app reads the body as it arrives (a slow
    # sender then holds that request's thread)
    body_temp_dir: str | None = None  # where spooled bodies go; None: $TMPDIR or /tmp
    response_buffer: int = 65536  # answer bytes held per connection before the app's
    # iterator is advanced again (the bound on a slow reader's memory)

    # --- timeouts (seconds)
    head_timeout: float = 10.0  # whole request head must arrive within this (slowloris)
    keepalive_timeout: float = 5.0  # idle keep-alive connection is closed after this
    socket_timeout: float = 30.0  # one blocking read or write of a body waits at most this
    graceful_timeout: float = 30.0  # TERM: in-flight requests get this long to finish

    # --- process management (master)
    harakiri: float = 0.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    reload_on_rss: int = 0  # MB
    pidfile: str | None = None
    daemonize: str | None = None
    vacuum: bool = False
    stats: str | None = None  # read-only stats listener: JSON, /metrics, the status page
    metrics: bool = True  # request metrics (a few integer increments per request)
    config_file: str | None = None  # the ini file a reload re-reads

    # --- uWSGI features honoured from ini files (and some CLI options)
    mounts: list = field(default_factory=list)  # (prefix, "module:app" or "file.py")
    manage_script_name: bool = False
    static_maps: list = field(default_factory=list)  # (url prefix, directory)
    add_headers: list = field(default_factory=list)  # (name, value) added to every answer
    touch_reload: list = field(default_factory=list)  # files whose mtime change means HUP
    py_autoreload: float = 0.0  # seconds between polls of the app's module files; 0 = off
    attach_daemons: list = field(default_factory=list)  # commands the master supervises
    exec_asap: list = field(default_factory=list)  # commands run once before anything
    hook_pre_app: list = field(default_factory=list)  # "exec:cmd" run before the app import
    strict: bool = False
    file_wrapper: bool = True  # wsgi-disable-file-wrapper turns it off
    syslog: tuple | None = None  # (ident, facility, (host, port) or None): error log copy
    need_app: bool = True
    lazy_apps: bool = True
    chmod_socket: int | None = None
    chown_socket: str | None = None
    uid: str | None = None
    gid: str | None = None
    umask: int | None = None
    ini_warnings: list = field(default_factory=list)
    # attr -> where its value was written ("FILE:LINE: key = value" or "--key 'value'"),
    # so a check made later (chdir exists, pidfile writable) names the line to fix
    origins: dict = field(default_factory=dict)

    # --- logging
    access_log: str | None = "-"  # "-" = stdout; None = off (--disable-logging)
    access_log_format: str = "combined"  # or "json" (OpenTelemetry field names)
    error_log: str | None = None  # None = stderr (--logto FILE)
    log_level: str = "info"
    log_4xx: bool = False  # with disable-logging, still log client errors (uWSGI's log-4xx)
    log_5xx: bool = False
    log_slow: int = 0  # ms; requests slower than this are logged to the error log
    log_maxsize: int = 0  # bytes; a log file past this is rotated by the master (0 = never)

    def validate(self) -> Config:
        """Check cross-field rules; raise ConfigError naming the option."""
        if self.app is None and self.wsgi_file is None and not self.mounts:
            raise ConfigError("no application: give MODULE:CALLABLE, --wsgi-file FILE or --mount")
        if self.app is not None and ":" not in self.app and self.wsgi_file is None:
            # uWSGI's `module = pkg.mod` without a callable means the callable option
            self.app = f"{self.app}:{self.callable}"
        for name in ("processes", "threads", "backlog", "max_request_line", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be at least 1")
        for name in ("head_timeout", "keepalive_timeout", "socket_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be positive")
        if not 1 <= self.buffer_size <= 65536:
            raise ConfigError("--buffer-size: must be between 1 and 65536 (uwsgi's 16-bit size)")
        if self.script_name:
            if not self.script_name.startswith("/"):
                raise ConfigError(f"--mount: prefix must start with '/', got {self.script_name!r}")
            sn = self.script_name.rstrip("/")  # "/" itself means the root: no prefix
            if sn and not sn.startswith("/"):
                raise ConfigError(f"--mount: prefix must start with '/', got {self.script_name!r}")
            self.script_name = sn
        if not self.listeners:
            self.listeners = [ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8000)]
            self.listeners_defaulted = True
        if self.py_autoreload < 0:
            raise ConfigError("--py-autoreload: must not be negative")
        if bool(self.certfile) != bool(self.keyfile):
            given, missing = (
                ("--certfile", "--keyfile") if self.certfile else ("--keyfile", "--certfile")
            )
            raise ConfigError(f"{given} needs {missing} too")
        if self.certfile:
            files = tls_paths_absolute(TlsFiles(self.certfile, self.keyfile, key="--certfile"))
            self.listeners = [
                dataclasses.replace(a, tls=files)
                if a.protocol == PROTOCOL_HTTP and a.tls is None
                else a
                for a in self.listeners
            ]
        return self

    def where(self, attr: str, option: str | None = None) -> str:
        """Where `attr` was set, for an error message: its file and line, or its option."""
        if attr in self.origins:
            return self.origins[attr]
        return f"--{option or attr.replace('_', '-')} {getattr(self, attr)!r}"

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)


def cpu_count() -> int:
    return os.cpu_count() or 1
