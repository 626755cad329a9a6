"""The chat-completions client against a real local server speaking the OpenAI API
(tests/support/openai_server.py): JSON mode without streaming, retries on 429/5xx honouring
Retry-After, timeouts and the budget, broken answers named for the note."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cloud.assistant.provider import (
    ChatAnswer,
    ChatClient,
    ProviderConfig,
    ProviderError,
    parse_json_content,
    retry_after_seconds,
)
from cloud.settings import GROQ_BASE_URL, CloudSettings
from tests.support.openai_server import FakeOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


def _client(server: FakeOpenAI, **overrides: float) -> ChatClient:
    config = ProviderConfig(
        base_url=server.base_url,
        api_key="sk-test",
        timeout_s=overrides.get("timeout_s", 5.0),
        max_retries=int(overrides.get("max_retries", 2)),
        budget_s=overrides.get("budget_s", 20.0),
        max_tokens=500,
    )
    return ChatClient(config)


def _ask(client: ChatClient) -> ChatAnswer:
    return asyncio.run(client.complete_json(model="m-parse", system="sys", user="text"))


def test_json_mode_without_streaming(server: FakeOpenAI) -> None:
    server.reply({"sensors": []})
    answer = _ask(_client(server))
    assert answer.content == {"sensors": []}
    assert (answer.model, answer.attempts) == ("local-test-model", 1)
    (sent,) = server.requests
    assert sent["stream"] is False
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["model"] == "m-parse" and sent["max_tokens"] == 500
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_429_then_success_waits_as_told(server: FakeOpenAI) -> None:
    server.fail(429, retry_after="1")
    server.reply({"ok": True})
    started = time.monotonic()
    answer = _ask(_client(server))
    assert answer.content == {"ok": True} and answer.attempts == 2
    # Retry-After was honoured: the retry came no earlier than the server asked.
    assert time.monotonic() - started >= 1.0
    assert len(server.requests) == 2


def test_5xx_retried_with_backoff_then_given_up(server: FakeOpenAI) -> None:
    for _ in range(3):
        server.fail(503)
    with pytest.raises(ProviderError, match=r"HTTP 503.*gave up after 3 attempts"):
        _ask(_client(server, max_retries=2))
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(server: FakeOpenAI) -> None:
    server.fail(400, message="bad model")
    with pytest.raises(ProviderError, match="HTTP 400: bad model"):
        _ask(_client(server))
    assert len(server.requests) == 1
    wrong_key = ChatClient(ProviderConfig(server.base_url, "sk-wrong", 5.0, 2, 20.0, 500))
    with pytest.raises(ProviderError, match="HTTP 401"):
        _ask(wrong_key)


def test_timeout(server: FakeOpenAI) -> None:
    server.hang(60)
    with pytest.raises(ProviderError, match="timed out"):
        _ask(_client(server, timeout_s=0.5, max_retries=0))


def test_retry_after_beyond_the_budget_is_not_waited_for(server: FakeOpenAI) -> None:
    server.fail(429, retry_after="120")
    with pytest.raises(ProviderError, match="overrun the budget of 5 s"):
        _ask(_client(server, budget_s=5.0))
    assert len(server.requests) == 1


def test_unreachable() -> None:
    config = ProviderConfig("http://127.0.0.1:9/v1", None, 2.0, 0, 5.0, 100)
    with pytest.raises(ProviderError, match="unreachable"):
        _ask(ChatClient(config))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("Sure! Here is the JSON you asked for", "not JSON"),
        ("[1, 2]", "not an object"),
        ("", "empty"),
    ],
)
def test_broken_answers_are_named(server: FakeOpenAI, content: str, problem: str) -> None:
    server.reply(content)
    with pytest.raises(ProviderError, match=problem):
        _ask(_client(server))


def test_cut_off_and_non_completion_answers(server: FakeOpenAI) -> None:
    server.reply({"a": 1}, finish_reason="length")
    with pytest.raises(ProviderError, match="token limit"):
        _ask(_client(server))
    server.raw(200, b'{"hello": "world"}')
    with pytest.raises(ProviderError, match="not a chat completion"):
        _ask(_client(server))


def test_fenced_json_is_forgiven() -> None:
    assert parse_json_content('```json\n{"a": 1}\n```') == {"a": 1}


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_settings_choose_the_provider() -> None:
    assert ProviderConfig.from_settings(CloudSettings()) is None
    keyed = ProviderConfig.from_settings(CloudSettings.from_env({"GROQ_API_KEY": "gsk"}))
    assert keyed is not None and keyed.base_url == GROQ_BASE_URL
    local = ProviderConfig.from_settings(
        CloudSettings.from_env({"RIG_AI_BASE_URL": "http://127.0.0.1:8080/v1/"})
    )
    assert local is not None and (local.base_url, local.api_key) == (
        "http://127.0.0.1:8080/v1",
        None,
    )


def test_key_from_a_file(tmp_path: object) -> None:
    from pathlib import Path

    key = Path(str(tmp_path)) / "key"
    key.write_text("sk-from-file\n")
    settings = CloudSettings.from_env({"RIG_AI_API_KEY_FILE": str(key)})
    assert settings.ai_api_key == "sk-from-file"
    assert "sk-from-file" not in repr(settings)


def test_bad_provider_settings_name_the_variable() -> None:
    from cloud.settings import SettingsError

    with pytest.raises(SettingsError) as raised:
        CloudSettings.from_env(
            {"RIG_AI_BASE_URL": "groq.com", "RIG_AI_TIMEOUT_S": "0", "RIG_AI_MAX_RETRIES": "x"}
        )
    message = str(raised.value)
    for variable in ("RIG_AI_BASE_URL='groq.com'", "RIG_AI_TIMEOUT_S='0'", "RIG_AI_MAX_RETRIES"):
        assert variable in message
    with pytest.raises(SettingsError, match="RIG_AI_API_KEY_FILE=/nonexistent: no such file"):
        CloudSettings.from_env({"RIG_AI_API_KEY_FILE": "/nonexistent"})
