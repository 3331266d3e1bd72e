"""The hosts of a deploy to several machines: `--hosts a,b` or an inventory file (TOML).

    # deploy/hosts.toml
    app = "/srv/gameprogress"            # DIR, the same path on every host (or --app)
    forklift = "/opt/forklift/bin/forklift"  # forklift on the hosts (default: forklift)
    ssh_config = "ssh_config"            # ssh -F FILE, relative to this file
    batch = 1                            # hosts switched together after the canary
    canary = "web1"                      # default: the first host

    [hosts.web1]
    address = "deploy@10.0.0.2"          # [user@]host[:port]
    [hosts.web2]
    address = "deploy@10.0.0.3:2222"
    pidfile = "/srv/gameprogress/forklift.pid"   # any deploy setting, for this host only

Hosts keep their order; the canary goes first. Errors name the file, the key and the value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .releases import DeployError

# per-host (or top-level) keys that are deploy options, passed to the host's forklift
HOST_SETTINGS = (
    "repo", "pidfile", "module", "ini", "wsgi_file", "callable", "health", "health_host",
    "release_command", "pip_args", "shared", "watch", "keep", "nginx", "nginx_source",
    "nginx_upstream", "nginx_server_name", "nginx_listen", "nginx_cmd",
)  # fmt: skip
_TOP = ("app", "forklift", "ssh_config", "batch", "canary", "host_timeout", "hosts")
_HOST_KEYS = ("address", "app", "forklift")
_DESTINATION = re.compile(
    r"^(?:(?P<user>[^@\s/]+)@)?"  # user@
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s/\[\]]+)"  # a name, an IPv4 address, [IPv6]
    r"(?::(?P<port>\d+))?$"  # :port
)


class InventoryError(DeployError):
    """The inventory (or --hosts) cannot be used; one line names the file, key and value."""


@dataclass
class Host:
    name: str
    user: str | None
    address: str
    port: int | None
    app: str
    forklift: str = "forklift"
    settings: dict = field(default_factory=dict)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}" if self.user else self.address


@dataclass
class Inventory:
    hosts: list
    ssh_config: str | None = None
    batch: int = 1
    host_timeout: float = 10.0
    source: str = "--hosts"

    @property
    def canary(self) -> Host:
        return self.hosts[0]

    def batches(self) -> list:
        """[[canary], [next batch], ...]: the order of the switches."""
        rest = self.hosts[1:]
        groups = [[self.hosts[0]]]
        for i in range(0, len(rest), self.batch):
            groups.append(rest[i : i + self.batch])
        return groups


def parse_destination(text: str, where: str) -> tuple:
    """`[user@]host[:port]` -> (user, host, port); IPv6 in brackets."""
    m = _DESTINATION.match(text.strip())
    if not m:
        raise InventoryError(f"{where}: {text!r} is not [user@]host[:port]")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise InventoryError(f"{where}: port {port} out of range in {text!r}")
    return m.group("user"), m.group("host").strip("[]"), port


def from_hosts(text: str, app: str | None, forklift: str | None) -> list:
    if not app:
        raise InventoryError("--hosts: give --app DIR (the same path on every host)")
    hosts = []
    for item in (h.strip() for h in text.split(",")):
        if not item:
            continue
        user, address, port = parse_destination(item, "--hosts")
        hosts.append(Host(item, user, address, port, app, forklift or "forklift"))
    return hosts


def load(args) -> Inventory:
    """The hosts from --inventory and/or --hosts, with the command line winning."""
    inventory = Inventory(hosts=[])
    if args.inventory:
        inventory = read_file(args.inventory, args.app, args.remote_forklift)
    if args.hosts:
        inventory.hosts = from_hosts(args.hosts, args.app or _common_app(inventory), None)
        for host in inventory.hosts:
            host.forklift = args.remote_forklift or _common(inventory, "forklift") or "forklift"
    if not inventory.hosts:
        raise InventoryError(f"{inventory.source}: no hosts")
    names = [h.name for h in inventory.hosts]
    if len(set(names)) != len(names):
        raise InventoryError(f"{inventory.source}: a host is named twice: {', '.join(names)}")
    if getattr(args, "ssh_config", None):
        inventory.ssh_config = os.path.abspath(args.ssh_config)
    if getattr(args, "batch", None):
        inventory.batch = args.batch
    if getattr(args, "host_timeout", None):
        inventory.host_timeout = args.host_timeout
    return inventory


def _common_app(inventory: Inventory) -> str | None:
    return _common(inventory, "app")


def _common(inventory: Inventory, key: str) -> str | None:
    values = {getattr(h, key) for h in inventory.hosts}
    return values.pop() if len(values) == 1 else None


def read_file(path: str, app: str | None, forklift: str | None) -> Inventory:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InventoryError(
                f"{path}: reading TOML needs Python 3.11 or the tomli package; use --hosts"
            ) from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InventoryError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not TOML: {exc}") from None
    for key in data:
        if key not in _TOP and key not in HOST_SETTINGS:
            raise InventoryError(f"{path}: unknown key {key!r}")
    app = app or data.get("app")
    forklift = forklift or data.get("forklift") or "forklift"
    common = {k: data[k] for k in HOST_SETTINGS if k in data}
    hosts = []
    table = data.get("hosts")
    if not isinstance(table, dict) or not table:
        raise InventoryError(f"{path}: no [hosts.NAME] tables")
    for name, entry in table.items():
        where = f"{path}: hosts.{name}"
        if not isinstance(entry, dict):
            raise InventoryError(f"{where}: expected a table, got {entry!r}")
        for key in entry:
            if key not in _HOST_KEYS and key not in HOST_SETTINGS:
                raise InventoryError(f"{where}: unknown key {key!r}")
        user, address, port = parse_destination(str(entry.get("address", name)), where)
        host_app = entry.get("app", app)
        if not host_app:
            raise InventoryError(f'{where}: no app directory (app = "/srv/..." or --app)')
        settings = dict(common)
        settings.update({k: v for k, v in entry.items() if k in HOST_SETTINGS})
        hosts.append(
            Host(name, user, address, port, host_app, entry.get("forklift", forklift), settings)
        )
    canary = data.get("canary")
    if canary is not None:
        found = [h for h in hosts if h.name == canary]
        if not found:
            raise InventoryError(f"{path}: canary = {canary!r} is not one of the hosts")
        hosts.remove(found[0])
        hosts.insert(0, found[0])
    batch = data.get("batch", 1)
    if not isinstance(batch, int) or batch < 1:
        raise InventoryError(f"{path}: batch = {batch!r}: expected a whole number >= 1")
    timeout = data.get("host_timeout", 10.0)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InventoryError(f"{path}: host_timeout = {timeout!r}: expected seconds > 0")
    ssh_config = data.get("ssh_config")
    if ssh_config:
        ssh_config = os.path.join(os.path.dirname(os.path.abspath(path)), ssh_config)
    return Inventory(hosts, ssh_config, batch, float(timeout), source=path)


def setting_args(settings: dict) -> list:
    """A host's settings as the deploy options its forklift takes."""
    args = []
    for key, value in settings.items():
        option = "--" + key.replace("_", "-")
        if key == "pip_args" and isinstance(value, list):
            value = " ".join(value)
        values = value if isinstance(value, list) else [value]
        for item in values:
            args.append(f"{option}={item}")
    return args
