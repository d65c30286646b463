"""The gateway's configuration (SPEC 8.2): a strict TOML file, or nothing (every keyed provider plus ``local``).

Strict means: an unknown section or key, a wrongly typed value, an unknown strategy, a route target naming an
unknown provider, a missing environment variable: :class:`ConfigError` naming the file, the key and what is
wrong. Nothing is ignored silently.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from ..providers.template import OpenaiTemplate

    ProviderClass = type[OpenaiTemplate]
else:
    ProviderClass = type

__all__ = [
    "STRATEGIES",
    "Config",
    "ConfigError",
    "GatewayKey",
    "Route",
    "ServerSettings",
    "Target",
    "host_problem",
    "load_config",
    "split_model",
]

STRATEGIES = ("fallback", "round-robin", "least-busy")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")
_ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
MAX_RETRIES = 10


class ConfigError(Exception):
    """The configuration is wrong; the message names the file, the key and what is wrong."""


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_mb: float = 20.0
    drain_timeout_s: float = 30.0
    redis_url: str | None = None
    default_provider: str | None = None
    keepalive_s: float = 15.0  # `: keep-alive` comment after this long without upstream output
    models_ttl_s: float = 60.0  # how long GET /v1/models answers from its cached listing
    read_timeout_s: float = 30.0  # a caller's request head, and then its body, must arrive within this
    strict_fields: bool = False  # 9.1.4: a field a door would drop and name is a 400 instead
    store_responses: bool = True  # 9.2.5: keep Responses API answers for previous_response_id and GET
    responses_ttl_s: float = 30 * 24 * 3600.0  # how long a stored response is kept
    responses_max: int = 10_000  # stored responses per process in memory (least recently used out first)
    responses_max_mb: float = 256.0  # their bytes in all per process in memory; none larger (also in Redis)
    playground: bool = True  # GET / serves the playground page (SPEC 11)
    max_cooldown_s: float = 300.0  # an upstream Retry-After cools a target (and is forwarded) for at most this long


@dataclass(frozen=True)
class Target:
    provider: str  # the gateway's name for it ("groq", "mybox", "local")
    model: str  # "" → the provider's default model

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class Route:
    name: str
    targets: list[Target]
    strategy: str = "fallback"
    cooldown_after: int = 3
    cooldown_s: float = 30.0
    cache_ttl_s: float = 0.0
    cache_shared: bool = False
    retries: int = 0  # a target failing with a retryable error before output is tried again this many times
    max_tokens_cap: int | None = None  # SPEC 9.1.7: larger max_tokens are lowered to this


@dataclass
class GatewayKey:
    name: str
    digest: bytes  # SHA-256 of the key (32 bytes)
    models: tuple[str, ...] | None = None  # globs over route names and provider/model; None: all
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrent is not None


@dataclass
class Config:
    path: str | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    providers: dict[str, ProviderClass] = field(default_factory=dict)  # the providers the gateway serves
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # timeout / total_timeout per provider
    routes: dict[str, Route] = field(default_factory=dict)
    keys: list[GatewayKey] = field(default_factory=list)
    aliases: tuple[tuple[str, str], ...] = ()  # SPEC 9.1.6: (name or glob, route or provider/model), in file order

    def provider(self, name: str) -> ProviderClass | None:
        """A served provider, else any catalog provider by name (None when unknown)."""
        cls = self.providers.get(name)
        if cls is not None:
            return cls
        from ..providers.catalog import get_provider

        try:
            return get_provider(name)
        except ValueError:
            return None

    def default_provider_name(self) -> str:
        """``[server] default_provider``, else the CLI's rule (LLMRELAY_PROVIDER, custom, first keyed, local)."""
        if self.server.default_provider:
            return self.server.default_provider
        from ..client.router import resolve_provider

        cls = resolve_provider(None)
        for name, served in self.providers.items():
            if served is cls:
                return name
        return _catalog_name(cls)


def split_model(model: str) -> tuple[str, str] | None:
    """``provider/model`` split at the first ``/``; None for a bare name."""
    provider, slash, rest = model.partition("/")
    return (provider, rest) if slash else None


def _catalog_name(cls: ProviderClass) -> str:
    from ..providers.catalog import PROVIDERS

    for name, known in PROVIDERS.items():
        if known is cls:
            return name
    return cls.__name__.lower()


# ------------------------------------------------------------------------------------ loading


class _Reader:
    """Typed access to one TOML table that records which keys were read, so leftovers are errors."""

    def __init__(self, path: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.path, self.prefix, self.table = path, prefix, table
        self.seen: set[str] = set()

    def error(self, key: str, what: str) -> ConfigError:
        name = f"{self.prefix}.{key}" if self.prefix and key else (self.prefix or key)
        return ConfigError(f"{self.path}: {name}: {what}")

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, check: Callable[[Any], str] | None = None
    ) -> Any:
        self.seen.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            wanted = " or ".join(_type_name(k) for k in kinds if not (k is int and float in kinds))
            raise self.error(key, f"must be {wanted}, not {_type_name(type(value))} {value!r:.60}")
        if float in kinds and isinstance(value, int):
            value = float(value)
        if check is not None:
            problem = check(value)
            if problem:
                raise self.error(key, problem)
        return value

    def finish(self) -> None:
        unknown = [key for key in self.table if key not in self.seen]
        if unknown:
            raise self.error(unknown[0], f"unknown key (known: {', '.join(sorted(self.seen))})")


def _type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)


def _positive(value: float) -> str:
    return "" if value > 0 else "must be > 0"


def _not_negative(value: float) -> str:
    return "" if value >= 0 else "must be >= 0"


def _port(value: int) -> str:
    return "" if 0 <= value <= 65535 else "must be a port number (0-65535)"


def _retries(value: int) -> str:
    return "" if 0 <= value <= MAX_RETRIES else f"must be from 0 to {MAX_RETRIES}"


def _env_name(value: str) -> str:
    return "" if _ENV_NAME.match(value) else "must be an environment variable name"


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a configuration file; ``None`` gives the default configuration."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    label = path or "(no config file)"
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    top = _Reader(label, "", data)
    config = Config(path=path)
    server = top.get("server", dict, {})
    providers = top.get("providers", dict, {})
    routes = top.get("routes", dict, {})
    keys = top.get("keys", list, [])
    aliases = top.get("aliases", dict, {})
    top.finish()

    config.server = _server_settings(_Reader(label, "server", server))
    if config.server.redis_url is None and environ.get("LLMRELAY_REDIS_URL"):  # SPEC 8.8 (the file wins)
        config.server.redis_url = environ["LLMRELAY_REDIS_URL"]
    config.providers = _detected_providers(environ)
    for name, table in providers.items():
        if not isinstance(table, dict):
            raise top.error(f"providers.{name}", "must be a table ([providers.NAME])")
        cls, options = _provider(_Reader(label, f"providers.{name}", table), name, environ)
        config.providers[name] = cls
        if options:
            config.provider_options[name] = options
    if config.server.default_provider is not None and config.provider(config.server.default_provider) is None:
        raise _Reader(label, "server", server).error(
            "default_provider", f"unknown provider {config.server.default_provider!r}"
        )
    for name, table in routes.items():
        if not isinstance(table, dict):
            raise top.error(f"routes.{name}", "must be a table ([routes.NAME])")
        _check_route_name(top, name, config)
        config.routes[name] = _route(_Reader(label, f"routes.{name}", table), name, config, environ)
    config.aliases = _aliases(_Reader(label, "aliases", aliases), config)
    config.keys = _gateway_keys(top, label, keys, environ)
    return config


def _gateway_keys(top: _Reader, label: str, keys: list[Any], environ: Mapping[str, str]) -> list[GatewayKey]:
    """The ``[[keys]]`` entries: names and secrets each distinct."""
    found: list[GatewayKey] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, table in enumerate(keys):
        if not isinstance(table, dict):
            raise top.error(f"keys[{number}]", "must be a table ([[keys]])")
        key = _gateway_key(_Reader(label, f"keys[{number}]", table), environ)
        if key.name in names:
            raise top.error(f"keys[{number}].name", f"duplicate key name {key.name!r}")
        if key.digest in digests:
            # Which name would be logged, limited and allowed models would be arbitrary.
            first = found[digests[key.digest]].name
            raise top.error(
                f"keys[{number}]",
                f"the key {key.name!r} is the same secret as the key {first!r} (keys[{digests[key.digest]}]): "
                "every entry needs its own key (`llmrelay keys new NAME`)",
            )
        names[key.name] = number
        digests[key.digest] = number
        found.append(key)
    return found


def _check_route_name(top: _Reader, name: str, config: Config) -> None:
    """A route named ``provider/model`` would silently take that provider's model away from callers: refused."""
    split = split_model(name)
    if split is not None and config.provider(split[0]) is not None:
        raise top.error(
            f"routes.{name}",
            f"a route cannot be named like the provider/model {name!r}: it would shadow the model {split[1]!r} "
            f"of the provider {split[0]!r}; choose a name without '{split[0]}/'",
        )


def host_problem(host: str) -> str:
    """What is wrong with an address to bind (``--host`` or ``[server] host``), else ""."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return ""
    except ValueError:
        pass
    if not bare or ":" in bare or all(char.isdigit() or char == "." for char in bare) or not bare.isprintable():
        return f"{host!r} is not a valid IP address"
    if len(bare) > 253 or not _HOSTNAME.match(bare):
        return f"{host!r} is neither an IP address nor a host name"
    return ""


def _server_settings(reader: _Reader) -> ServerSettings:
    settings = ServerSettings(
        host=reader.get("host", str, "127.0.0.1", host_problem),
        port=reader.get("port", int, 8080, _port),
        max_body_mb=reader.get("max_body_mb", float, 20.0, _positive),
        drain_timeout_s=reader.get("drain_timeout_s", float, 30.0, _not_negative),
        redis_url=reader.get("redis_url", str),
        default_provider=reader.get("default_provider", str),
        keepalive_s=reader.get("keepalive_s", float, 15.0, _positive),
        models_ttl_s=reader.get("models_ttl_s", float, 60.0, _not_negative),
        read_timeout_s=reader.get("read_timeout_s", float, 30.0, _positive),
        strict_fields=reader.get("strict_fields", bool, False),
        store_responses=reader.get("store_responses", bool, True),
        responses_ttl_s=reader.get("responses_ttl_s", float, 30 * 24 * 3600.0, _positive),
        responses_max=reader.get("responses_max", int, 10_000, _positive),
        responses_max_mb=reader.get("responses_max_mb", float, 256.0, _positive),
        playground=reader.get("playground", bool, True),
        max_cooldown_s=reader.get("max_cooldown_s", float, 300.0, _positive),
    )
    reader.finish()
    return settings


def _detected_providers(environ: Mapping[str, str]) -> dict[str, ProviderClass]:
    """Catalog providers whose key (or base-URL variable) is set, then ``local``."""
    from ..providers.catalog import PROVIDERS, get_provider

    found: dict[str, ProviderClass] = {}
    for name, cls in PROVIDERS.items():
        base_env = getattr(cls, "api_base_env", None)
        if (cls.needs_auth and environ.get(cls.get_api_key_env())) or (
            not cls.needs_auth and base_env and environ.get(base_env)
        ):
            found[name] = cls
    found["local"] = get_provider("local")
    return found


def _provider(reader: _Reader, name: str, environ: Mapping[str, str]) -> tuple[ProviderClass, dict[str, Any]]:
    from ..providers.catalog import SelfHosted, get_provider

    if split_model(name) is not None or not name:
        raise reader.error("", "a provider name cannot contain '/'")
    api_base = reader.get("api_base", str)
    key_env = reader.get("api_key_env", str, None, _env_name)
    default_model = reader.get("default_model", str)
    options = _timeouts(reader)
    cap = reader.get("max_tokens_cap", int, None, _positive)
    effort = reader.get("reasoning_effort", bool)
    headers, secrets = _headers(reader, environ)
    reader.finish()
    try:
        base: ProviderClass = get_provider(name)
        known = True
    except ValueError:
        base, known = SelfHosted, False
    if not known and not api_base:
        raise reader.error("api_base", f"missing: {name!r} is not a catalog provider, so it needs its URL")
    if api_base is not None and not api_base.startswith(("http://", "https://")):
        raise reader.error("api_base", f"must be an http:// or https:// URL, not {api_base!r}")
    if key_env is not None and not environ.get(key_env):
        raise reader.error("api_key_env", f"the environment variable {key_env} is not set")
    attributes: dict[str, Any] = {"label": name if not known else base.get_name()}
    if api_base is not None:
        attributes["api_base"] = api_base.rstrip("/")
        attributes["api_base_env"] = None
    if key_env is not None:
        attributes["api_key_env"] = key_env
    elif not known:
        attributes["api_key_env"] = f"LLMRELAY_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_API_KEY"
    if default_model is not None:
        attributes["default_model"] = default_model
    if cap is not None:
        attributes["max_tokens_cap"] = cap
    if effort is not None:
        attributes["accepts_reasoning_effort"] = effort
    if headers:
        attributes["headers"] = {**base.headers, **headers}
        attributes["redacted"] = (*base.redacted, *secrets)
    if known and len(attributes) == 1:
        return base, options
    return type(f"Gateway_{re.sub(r'[^A-Za-z0-9_]', '_', name)}", (base,), attributes), options


def _timeouts(reader: _Reader) -> dict[str, Any]:
    """``timeout`` / ``total_timeout`` of a ``[providers.NAME]`` entry, as request options."""
    options = {}
    for name in ("timeout", "total_timeout"):
        value = reader.get(name, float, None, _positive)
        if value is not None:
            options[name] = value
    return options


def _headers(reader: _Reader, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``headers = {"api-key" = "${AZURE_OPENAI_KEY}"}``: extra headers on every request to this upstream; each
    ``${NAME}`` in a value is the environment variable NAME (which must be set), so secrets stay out of the file.
    Returns the headers and the values taken from the environment (secrets: never quoted in an error)."""
    from ..http.checks import check_headers

    table = reader.get("headers", dict, {})
    resolved: dict[str, str] = {}
    secrets: list[str] = []
    for name, value in table.items():
        if not isinstance(value, str):
            raise reader.error(f"headers.{name}", f"must be a string, not {_type_name(type(value))}")

        def variable(match: re.Match[str], name: str = name) -> str:
            variable_name = match.group(1)
            if not _ENV_NAME.match(variable_name):
                raise reader.error(f"headers.{name}", f"${{{variable_name}}} is not an environment variable name")
            found = environ.get(variable_name)
            if not found:
                raise reader.error(f"headers.{name}", f"the environment variable {variable_name} is not set")
            secrets.append(found)
            return found

        resolved[name] = _ENV_REFERENCE.sub(variable, value)
    try:
        check_headers(resolved)
    except (TypeError, ValueError) as error:  # names the header, never quotes a value (it may hold a secret)
        raise reader.error("headers", str(error)) from None
    return resolved, secrets


def _route(reader: _Reader, name: str, config: Config, environ: Mapping[str, str]) -> Route:
    targets_raw = reader.get("targets", list)
    if not targets_raw:
        raise reader.error("targets", 'missing or empty: list at least one "provider/model"')
    targets: list[Target] = []
    for item in targets_raw:
        if not isinstance(item, str) or not item:
            raise reader.error("targets", f'each target must be a "provider/model" string, not {item!r}')
        provider, _, model = item.partition("/")
        cls = config.provider(provider)
        if cls is None:
            from ..providers.catalog import provider_names

            known = sorted({*config.providers, *provider_names()})
            raise reader.error(
                "targets", f"{item!r} names an unknown provider {provider!r} (known: {', '.join(known)})"
            )
        if cls.needs_auth and not cls.get_api_key() and not environ.get(cls.get_api_key_env()):
            raise reader.error("targets", f"{item!r}: the environment variable {cls.get_api_key_env()} is not set")
        target = Target(provider, model)
        if target in targets:
            raise reader.error("targets", f"{item!r} is listed twice")
        targets.append(target)
    route = Route(
        name=name,
        targets=targets,
        strategy=reader.get("strategy", str, "fallback"),
        cooldown_after=reader.get("cooldown_after", int, 3, _positive),
        cooldown_s=reader.get("cooldown_s", float, 30.0, _not_negative),
        cache_ttl_s=reader.get("cache_ttl_s", float, 0.0, _not_negative),
        cache_shared=reader.get("cache_shared", bool, False),
        retries=reader.get("retries", int, 0, _retries),
        max_tokens_cap=reader.get("max_tokens_cap", int, None, _positive),
    )
    if route.strategy not in STRATEGIES:
        raise reader.error("strategy", f"unknown strategy {route.strategy!r} (one of: {', '.join(STRATEGIES)})")
    reader.finish()
    return route


def _aliases(reader: _Reader, config: Config) -> tuple[tuple[str, str], ...]:
    """``"name or glob" = "route or provider/model"``: each target must be served (a route or a known provider)."""
    pairs = []
    for name in reader.table:
        target = reader.get(name, str)
        if not name:
            raise reader.error(name, "an alias needs a name or a glob")
        split = split_model(target)
        if target in config.routes or (split is not None and split[1] and config.provider(split[0]) is not None):
            pairs.append((name, target))
            continue
        raise reader.error(
            name,
            f"{target!r} is neither a route nor a provider/model of a known provider (routes: "
            f"{', '.join(config.routes) or 'none'})",
        )
    reader.finish()
    return tuple(pairs)


def _gateway_key(reader: _Reader, environ: Mapping[str, str]) -> GatewayKey:
    if "key" in reader.table or "secret" in reader.table or "api_key" in reader.table:
        found = next(name for name in ("key", "secret", "api_key") if name in reader.table)
        raise reader.error(
            found,
            "a plain key is refused: put its SHA-256 in sha256 (`llmrelay keys new NAME` prints the line) "
            "or name an environment variable in key_env",
        )
    name = reader.get("name", str)
    if not name:
        raise reader.error("name", "missing: every key needs a name (it is what logs and metrics show)")
    digest_hex = reader.get("sha256", str)
    key_env = reader.get("key_env", str, None, _env_name)
    if (digest_hex is None) == (key_env is None):
        raise reader.error("sha256", "give exactly one of sha256 and key_env")
    if digest_hex is not None:
        digest_hex = digest_hex.strip().lower()
        if not _SHA256.match(digest_hex):
            raise reader.error("sha256", "must be 64 hex digits (the SHA-256 of the key)")
        digest = bytes.fromhex(digest_hex)
    else:
        assert key_env is not None
        secret = environ.get(key_env)
        if not secret:
            raise reader.error("key_env", f"the environment variable {key_env} is not set")
        digest = hashlib.sha256(secret.encode()).digest()
    models = reader.get("models", list)
    if models is not None and not all(isinstance(glob, str) and glob for glob in models):
        raise reader.error("models", "must be a list of non-empty strings (globs over route names and provider/model)")
    key = GatewayKey(
        name=name,
        digest=digest,
        models=tuple(models) if models is not None else None,
        rpm=reader.get("rpm", int, None, _positive),
        tpm=reader.get("tpm", int, None, _positive),
        max_concurrent=reader.get("max_concurrent", int, None, _positive),
    )
    reader.finish()
    return key
