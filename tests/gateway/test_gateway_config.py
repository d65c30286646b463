"""Configuration (SPEC 8.2), `serve --check-config`, `keys new`, and the in-memory state."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import subprocess
from pathlib import Path

import pytest
from gateway_support import llmrelay_command

from llmrelay.server.config import ConfigError, load_config
from llmrelay.server.keys import KeyRing, allowed
from llmrelay.server.state import LimitExceeded, MemoryState

DIGEST = hashlib.sha256(b"sk-llmrelay-test").hexdigest()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path: Path, text: str, **environ: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_full_example_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[server]
host = "127.0.0.1"
port = 9000
max_body_mb = 1.5
drain_timeout_s = 5

[providers.mybox]
api_base = "http://10.0.0.5:8000/v1"
api_key_env = "MYBOX_KEY"
default_model = "qwen2.5-7b"
timeout = 120

[routes.fast]
targets = ["mybox/qwen2.5-7b", "local/smollm2"]
strategy = "round-robin"
cooldown_after = 2
cooldown_s = 10
cache_ttl_s = 60

[[keys]]
name = "alice"
sha256 = "{DIGEST}"
models = ["fast", "local/*"]
rpm = 60
tpm = 100000
max_concurrent = 4

[[keys]]
name = "bob"
key_env = "BOB_KEY"
""",
    )
    config = load_config(path, environ={"MYBOX_KEY": "x", "BOB_KEY": "sk-bob"})
    assert config.server.port == 9000 and config.server.max_body_mb == 1.5
    assert config.provider_options["mybox"] == {"timeout": 120.0}
    assert config.providers["mybox"].api_base == "http://10.0.0.5:8000/v1"
    assert config.providers["mybox"].default_model == "qwen2.5-7b"
    route = config.routes["fast"]
    assert [t.label for t in route.targets] == ["mybox/qwen2.5-7b", "local/smollm2"]
    assert (route.strategy, route.cooldown_after, route.cooldown_s, route.cache_ttl_s) == ("round-robin", 2, 10.0, 60.0)
    alice, bob = config.keys
    assert (alice.name, alice.rpm, alice.tpm, alice.max_concurrent) == ("alice", 60, 100000, 4)
    ring = KeyRing(config.keys)
    assert ring.find("sk-llmrelay-test") is alice
    assert ring.find("sk-bob") is bob
    assert ring.find("sk-llmrelay-tesT") is None
    assert allowed(alice, ("fast",)) and allowed(alice, ("local/smollm2",)) and not allowed(alice, ("up/x",))
    assert allowed(bob, ("anything/at-all",))


@pytest.mark.parametrize(
    ("text", "named", "what"),
    [
        ("[serverr]\nport = 1\n", "serverr", "unknown key"),
        ("[server]\nprot = 1\n", "server.prot", "unknown key"),
        ('[server]\nport = "80"\n', "server.port", "must be an integer"),
        ("[server]\nport = true\n", "server.port", "must be an integer"),
        ("[server]\nport = 70000\n", "server.port", "port number"),
        ("[server]\nmax_body_mb = 0\n", "server.max_body_mb", "> 0"),
        ('[providers.box]\napi_key_env = "X"\n', "providers.box.api_base", "needs its URL"),
        ('[providers.box]\napi_base = "ftp://x"\n', "providers.box.api_base", "http://"),
        ('[providers.box]\napi_base = "http://x/v1"\nmodels = []\n', "providers.box.models", "unknown key"),
        (
            '[providers.box]\napi_base = "http://x/v1"\napi_key_env = "NOPE_KEY"\n',
            "providers.box.api_key_env",
            "NOPE_KEY is not set",
        ),
        ('[routes.r]\ntargets = ["local/x"]\nstrategy = "random"\n', "routes.r.strategy", "unknown strategy 'random'"),
        ('[routes.r]\ntargets = ["nowhere/x"]\n', "routes.r.targets", "unknown provider 'nowhere'"),
        ('[routes.r]\ntargets = ["groq/llama"]\n', "routes.r.targets", "GROQ_API_KEY is not set"),
        ("[routes.r]\ntargets = []\n", "routes.r.targets", "missing or empty"),
        ('[routes.r]\ntargets = ["local/x"]\ncooldown_after = 1.5\n', "routes.r.cooldown_after", "must be an integer"),
        ('[[keys]]\nname = "a"\nkey = "sk-plain"\n', "keys[0].key", "plain key is refused"),
        ('[[keys]]\nname = "a"\nsha256 = "abc"\n', "keys[0].sha256", "64 hex digits"),
        ('[[keys]]\nname = "a"\nkey_env = "MISSING_KEY"\n', "keys[0].key_env", "MISSING_KEY is not set"),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nrpm = 0\n', "keys[0].rpm", "> 0"),
        (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nmodels = "fast"\n', "keys[0].models", "must be a list"),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n',
            "keys[1].name",
            "duplicate",
        ),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "b"\nsha256 = "{DIGEST.upper()}"\n',
            "keys[1]",
            "the key 'b' is the same secret as the key 'a' (keys[0])",
        ),
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "b"\nkey_env = "SAME_KEY"\n',
            "keys[1]",
            "the key 'b' is the same secret as the key 'a'",
        ),
        ('[routes."local/smollm2"]\ntargets = ["local/smollm2"]\n', "routes.local/smollm2", "would shadow the model"),
        ('[routes."groq/fast"]\ntargets = ["local/smollm2"]\n', "routes.groq/fast", "of the provider 'groq'"),
        ('[server]\nhost = "999.1.1.1"\n', "server.host", "'999.1.1.1' is not a valid IP address"),
        ('[server]\nhost = "bad host"\n', "server.host", "neither an IP address nor a host name"),
        ('[server]\ndefault_provider = "nope"\n', "server.default_provider", "unknown provider"),
        ("[server\n", "", "not valid TOML"),
    ],
)
def test_config_errors_name_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, named: str, what: str
) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    message = error_of(tmp_path, text, SAME_KEY="sk-llmrelay-test")
    assert named in message and what in message, message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))


def test_default_config_serves_keyed_providers_and_local() -> None:
    config = load_config(None, environ={"GROQ_API_KEY": "gsk-x"})
    assert list(config.providers) == ["groq", "local"]
    config = load_config(None, environ={})
    assert list(config.providers) == ["local"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [llmrelay_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, '[routes.r]\ntargets = ["local/smollm2"]\n')
    done = run_cli("serve", "--check-config", good)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[routes.r]\ntargets = ["local/smollm2"]\nstrategy = "best"\n')
    done = run_cli("serve", "--check-config", str(bad))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"{bad}: routes.r.strategy: unknown strategy 'best'" in done.stderr
    assert "Traceback" not in done.stderr


def test_keys_new_prints_a_key_and_only_its_digest(tmp_path: Path) -> None:
    done = run_cli("keys", "new", "alice")
    assert done.returncode == 0, done.stderr
    key = done.stderr.splitlines()[0]  # the key on stderr, the config entry alone on stdout (>> gateway.toml)
    assert key.startswith("sk-llmrelay-") and len(key) >= len("sk-llmrelay-") + 43  # 32 bytes, base64
    entry = done.stdout
    assert key not in entry
    assert f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"' in entry
    config = load_config(write(tmp_path, entry), environ={})
    assert KeyRing(config.keys).find(key) is config.keys[0]
    other = run_cli("keys", "new", "alice").stderr.splitlines()[0]
    assert other != key


def test_serve_refuses_non_loopback_without_keys(tmp_path: Path) -> None:
    done = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 1
    assert "refusing to serve 0.0.0.0 without a gateway key" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\n[[keys]]\nname = "b"\nsha256 = "{DIGEST}"\n',
            "keys[1]: the key 'b' is the same secret as the key 'a' (keys[0])",
        ),
        ('[routes."local/smollm2"]\ntargets = ["local/smollm2"]\n', "routes.local/smollm2: a route cannot be named"),
    ],
)
def test_the_command_refuses_a_duplicate_key_and_a_shadowing_route(tmp_path: Path, text: str, said: str) -> None:
    path = write(tmp_path, text)
    for args in (["--check-config", path], ["--port", "0", "--config", path]):
        done = run_cli("serve", *args)
        assert done.returncode == 1 and done.stderr == f"error: {path}: {said}" + done.stderr.split(said, 1)[1]
        assert done.stderr.count("\n") == 1 and DIGEST not in done.stderr


def test_a_route_not_shaped_like_a_provider_model_may_hold_a_slash(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[routes."team/fast"]\ntargets = ["local/smollm2"]\n'), environ={})
    assert list(config.routes) == ["team/fast"]


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "::g", "bad host"])
def test_serve_names_an_invalid_host(host: str) -> None:
    done = run_cli("serve", "--host", host, "--port", "0")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: --host {host!r} is n"), done.stderr  # not an IP, neither a name
    assert done.stderr.count("\n") == 1 and "gateway key" not in done.stderr


def test_serve_refuses_more_workers_than_the_cpus_can_run(tmp_path: Path) -> None:
    import os

    cpus = len(os.sched_getaffinity(0))
    for count in (4 * cpus + 1, 100_000):
        done = run_cli("serve", "--port", "0", "--workers", str(count))
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"error: --workers {count} is more than this machine can use: "), done.stderr
        assert f"at most {4 * cpus} (4 per CPU, {cpus} CPU" in done.stderr
        assert done.stderr.count("\n") == 1
    done = run_cli("serve", "--port", "0", "--workers", "0")
    assert done.returncode == 1 and "--workers must be at least 1, not 0" in done.stderr


def test_serve_with_bad_config_exits_1(tmp_path: Path) -> None:
    done = run_cli("serve", "--port", "0", "--config", write(tmp_path, "[server]\nport = -1\n"))
    assert done.returncode == 1 and "server.port" in done.stderr


# ------------------------------------------------------------------------ MemoryState


def run_async(function):  # type: ignore[no-untyped-def]
    @functools.wraps(function)
    def wrapper() -> None:
        asyncio.run(function())

    return wrapper


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@run_async
async def test_rpm_sliding_window() -> None:
    clock = Clock()
    state = MemoryState(clock)
    for _ in range(3):
        assert await state.admit("k", 3, None, None) is None
        clock.now += 10
    with pytest.raises(LimitExceeded) as caught:
        await state.admit("k", 3, None, None)
    assert caught.value.limit == "rpm" and caught.value.retry_after == 30.0  # oldest at 1000, now 1030
    clock.now = 1060.5
    await state.admit("k", 3, None, None)  # the first request left the window
    await state.admit("other", 3, None, None)  # keys are separate


@run_async
async def test_tpm_and_concurrency_slots() -> None:
    clock = Clock()
    state = MemoryState(clock)
    await state.admit("k", None, 100, None)
    await state.add_tokens("k", 120)
    with pytest.raises(LimitExceeded) as caught:
        await state.admit("k", None, 100, None)
    assert caught.value.limit == "tpm" and caught.value.retry_after == 60.0
    clock.now += 61
    await state.admit("k", None, 100, None)
    first = await state.admit("c", None, None, 2)
    second = await state.admit("c", None, None, 2)
    assert first and second and first != second
    with pytest.raises(LimitExceeded) as caught:
        await state.admit("c", 10, None, 2)
    assert caught.value.limit == "max_concurrent" and caught.value.retry_after >= 1
    await state.release("c", first)
    assert await state.admit("c", 10, None, 2)


@run_async
async def test_rejected_request_counts_nothing() -> None:
    state = MemoryState(Clock())
    slot = await state.admit("k", 2, None, 1)
    with pytest.raises(LimitExceeded):
        await state.admit("k", 2, None, 1)  # no slot: the rpm count must not grow
    assert slot is not None
    await state.release("k", slot)
    await state.admit("k", 2, None, 1)
    with pytest.raises(LimitExceeded) as caught:
        await state.admit("k", 2, None, None)
    assert caught.value.limit == "rpm"


@run_async
async def test_cooldowns_and_cache() -> None:
    clock = Clock()
    state = MemoryState(clock)
    assert not await state.failed("up/m", 2, 30, None)
    assert await state.failed("up/m", 2, 30, None)
    assert await state.cooling("up/m") == 30
    clock.now += 31
    assert await state.cooling("up/m") == 0.0
    assert not await state.failed("up/m", 2, 30, None)
    await state.succeeded("up/m")
    assert not await state.failed("up/m", 2, 30, None)  # the streak was reset
    assert await state.failed("up/x", 5, 30, 7.0)  # a retry-after cools at once, for its time
    assert await state.cooling("up/x") == 7.0
    await state.cache_put("a", b"1", 10)
    assert await state.cache_get("a") == b"1"
    clock.now += 11
    assert await state.cache_get("a") is None
