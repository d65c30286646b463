"""What each url of a batch line does, and which provider answers it.

* :class:`Router`: the model of a line picks the provider as the CLI and the gateway do — with ``-p`` or
  ``--api-base`` every line goes there with its model as written (an llmrelay gateway routes ``provider/model``
  and route names itself); without them, ``provider/model`` whose prefix is a catalog name goes to that provider
  (split at the first ``/``), and any other model to the default provider. Each attempt is one call of the
  provider (``create_async_generator``, the path ``AsyncClient`` and the gateway take, over the shared
  connection pool) without the client's own retry loop: the batch runner retries itself (section 5's set and
  backoff, :mod:`llmrelay.client.retry`), because each attempt must pass through the shared limits.
* :data:`OPERATIONS`: per url, a check of the body (run for every line before any request) and the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..client.convert import chat_call_from_json, completion_from_events, provider_options
from ..client.router import complete_events
from ..errors import InvalidRequestError
from ..responses import Answer

if TYPE_CHECKING:
    from ..client.router import ProviderClass

__all__ = ["CHAT", "EMBEDDINGS", "OPERATIONS", "RESPONSES", "Operation", "Router", "check_body"]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"

# (answer body, usage dict or None)
Result = tuple[dict[str, Any], "dict[str, Any] | None"]


def _resolve(provider: str | None, api_base: str | None) -> ProviderClass:
    from ..client.router import resolve_provider

    return resolve_provider(provider, api_base)


class Router:
    """Provider classes and clients for the models of a batch (built once per process or Ray actor)."""

    def __init__(
        self,
        provider: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.provider = provider
        self.api_base = api_base
        self.api_key = api_key
        self.timeout = timeout
        self._fixed: ProviderClass | None = None
        self._classes: dict[str, tuple[ProviderClass, bool]] = {}
        self._options: dict[ProviderClass, dict[str, Any]] = {}
        self.checked: set[ProviderClass] = set()

    def settings(self) -> dict[str, Any]:
        """What a Ray actor needs to build the same router."""
        return {"provider": self.provider, "api_base": self.api_base, "api_key": self.api_key, "timeout": self.timeout}

    def resolve(self, model: str) -> tuple[ProviderClass, str]:
        """(provider class, model to send) for a line's model; ``ValueError`` for an unknown ``-p`` name."""
        if self.provider or self.api_base:
            if self._fixed is None:
                self._fixed = _resolve(self.provider or None, self.api_base)
            return self._fixed, model
        prefix, slash, rest = model.partition("/")
        if slash and prefix:
            known = self._classes.get(prefix)
            if known is None:
                known = self._catalog(prefix)
                self._classes[prefix] = known
            cls, found = known
            if found:
                return cls, rest
        if self._fixed is None:
            self._fixed = _resolve(None, None)
        return self._fixed, model

    @staticmethod
    def _catalog(name: str) -> tuple[Any, bool]:
        from ..providers.catalog import get_provider

        try:
            return get_provider(name), True
        except ValueError:
            return None, False

    def check_auth(self, cls: ProviderClass) -> None:
        """Raise ``MissingAuthError`` (once per provider) when a key is needed and none is set."""
        if cls in self.checked:
            return
        key = self.api_key if (self.provider or self.api_base) else None
        cls.check_auth(cls.get_api_key(key))
        self.checked.add(cls)

    def options(self, cls: ProviderClass) -> dict[str, Any]:
        """The connection keywords of every call to ``cls`` (only those set, so the class defaults apply)."""
        options = self._options.get(cls)
        if options is None:
            options = {}
            if self.provider or self.api_base:
                if self.api_key:
                    options["api_key"] = self.api_key
                if self.api_base:
                    options["api_base"] = self.api_base
            if self.timeout is not None:
                options["timeout"] = self.timeout
            self._options[cls] = options
        return options


class Operation:
    """One url: ``check(body)`` → a problem or None; ``call(router, body, headers)`` → (answer body, usage)."""

    def __init__(
        self,
        url: str,
        check: Callable[[dict[str, Any]], str | None],
        call: Callable[[Router, dict[str, Any], dict[str, str]], Awaitable[Result]] | None,
    ) -> None:
        self.url = url
        self.check = check
        self.call = call


_NOT_PARAMETERS = frozenset(("model", "messages", "stream"))


def _check_chat(body: dict[str, Any]) -> str | None:
    try:
        chat_call_from_json(body)
    except InvalidRequestError as error:
        return f"body: {error.message}"
    return None


async def _ask(
    router: Router, model: str, messages: list[dict[str, Any]], options: dict[str, Any], headers: dict[str, str]
) -> tuple[Answer, str]:
    """One non-streamed chat call of the line's provider: (the whole answer, the model sent)."""
    cls, model = router.resolve(model)
    answer = Answer()
    options = {**options, **router.options(cls), "headers": headers}
    for item in await complete_events(cls, model, messages, options):
        answer.add(item)
    return answer, model


async def _call_chat(router: Router, body: dict[str, Any], headers: dict[str, str]) -> Result:
    # The body was checked with chat_call_from_json before the run: only its conversion is needed here. The call
    # is _ask's, written out: no Answer is built for the common answer (the chat.completion comes from the events).
    cls, model = router.resolve(body["model"])
    options = {**router.options(cls), "headers": headers}
    if len(body) > 2:  # more than model and messages
        params = {name: value for name, value in body.items() if name not in _NOT_PARAMETERS}
        options = {**provider_options(params, False), **options}
    data = completion_from_events(await complete_events(cls, model, body["messages"], options), model)
    return data, data.get("usage")


def _check_responses(body: dict[str, Any]) -> str | None:
    from ..server.doors.responses import parse

    if body.get("previous_response_id") is not None:
        return "body: 'previous_response_id' needs stored responses, which a batch does not keep: put the whole conversation in 'input'"
    try:
        parse(body)
    except InvalidRequestError as error:
        return f"body: {error.message}"
    return None


async def _call_responses(router: Router, body: dict[str, Any], headers: dict[str, str]) -> Result:
    """The gateway's Responses translator (SPEC 9.2) around the same chat call: the response object."""
    from ..server.doors import responses

    request = responses.parse(body)
    call = request.call
    answer, model = await _ask(router, call.model, call.messages, call.options, headers)
    return responses.answer(request, answer, model), answer.usage.to_dict() if answer.usage is not None else None


def _check_embeddings(body: dict[str, Any]) -> str | None:
    from ..server.doors.embeddings import parse

    try:
        parse(body)
    except InvalidRequestError as error:
        return f"body: {error.message}"
    return None


async def _call_embeddings(router: Router, body: dict[str, Any], headers: dict[str, str]) -> Result:
    """The embeddings operation of the line's provider (SPEC 9.4), checked as the gateway's door checks it."""
    from ..server.doors.embeddings import parse

    request = parse(body)
    cls, model = router.resolve(request.model)
    options = {**request.options, **router.options(cls), "headers": headers}
    if "encoding_format" in options:
        options["encoding_format"] = request.encoding_format  # the provider encodes base64 itself
    data = await cls.create_embeddings_async(request.input, model, extra_data=request.extra or None, **options)
    return data, data.get("usage")


OPERATIONS: dict[str, Operation] = {
    CHAT: Operation(CHAT, _check_chat, _call_chat),
    EMBEDDINGS: Operation(EMBEDDINGS, _check_embeddings, _call_embeddings),
    RESPONSES: Operation(RESPONSES, _check_responses, _call_responses),
}


def check_body(url: str, body: dict[str, Any]) -> str | None:
    """The problem with a line's url and body, or None."""
    operation = OPERATIONS.get(url)
    if operation is None:
        return f"'url' must be one of {', '.join(OPERATIONS)}, not {url!r}"
    return operation.check(body)
