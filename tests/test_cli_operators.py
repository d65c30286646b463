"""The command's documented refusals (issue 15's audit): a host name is not loopback; unsupported parameters
exit 2."""

from __future__ import annotations

from test_cli import clean_env, one_error_line, run


def test_serve_on_a_host_name_requires_a_gateway_key() -> None:
    # Only 127.0.0.0/8, ::1 and "localhost" are loopback: any other name may resolve to every interface.
    for host in ("myhost", "localhost.example.com", "127.0.0.1.example.com"):
        result = run(["serve", "--host", host, "--port", "0"], timeout=60)
        assert result.returncode == 1, result.stderr
        assert f"refusing to serve {host} without a gateway key" in one_error_line(result)


def test_a_parameter_the_provider_rejects_exits_2() -> None:
    result = run(["chat", "-p", "groq", "-o", "logprobs", "true", "hi"], env=clean_env(GROQ_API_KEY="gsk-test-key"))
    assert result.returncode == 2, result.stderr
    assert one_error_line(result) == (
        "error: Groq does not support logprobs: its API rejects the request; leave it out or choose another provider"
    )
