"""The LLM entry point against a real OpenAI-compatible server on loopback and real PostgreSQL.

litellm's own client code makes every call; the server reports the usage, so the costs
asserted here are what a customer would be charged for those tokens.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from inference.llm import (
    InvalidLLMOutputError,
    LLMContext,
    cache_key,
    complete,
    mark_cacheable_prefix,
)
from inference.pricing import PriceBook, load_pricing
from sinks.db import Pool
from tests.fixtures.openai_server import OpenAIServer, ScriptedReply
from vidinsight.errors import PermanentError, Reason, TransientError, costs_of
from vidinsight.settings import Settings

HOSTED = "openai/gpt-4o-mini"
SELF_HOSTED = "hosted_vllm/y"
KEY_VARIABLE = "VI_TEST_LLM_API_KEY"
VALID = '{"label": "relevant", "confidence": 0.9}'


class Verdict(BaseModel):
    """A small response schema."""

    label: str
    confidence: float


@pytest.fixture
def context() -> LLMContext:
    """A fresh job, so cost event ids and response cache keys never collide across runs."""
    return LLMContext(customer_id=f"c-{uuid.uuid4()}", job_id=f"j-{uuid.uuid4()}", stage="analyse")


@pytest.fixture
def messages() -> list[dict[str, Any]]:
    """A system prompt (the stable prefix) and the ask."""
    return [
        {"role": "system", "content": "Classify the transcript."},
        {"role": "user", "content": "Is this about budgets?"},
    ]


@pytest.fixture
def prices(tmp_path: Path) -> PriceBook:
    """The configured prices: the self-hosted model is priced here, gpt-4o-mini by litellm."""
    path = tmp_path / "pricing.toml"
    path.write_text('[providers.hosted_vllm.y]\ninput_tokens = "1"\noutput_tokens = "2"\n')
    return load_pricing(path)


def configured(
    settings: Settings, models: list[str], bases: dict[str, str], **extra: Any
) -> Settings:
    """Settings naming ``models`` for every task at ``bases``, with fast test retries."""
    return settings.model_copy(
        update={
            "llm_models": {"default": models},
            "llm_api_bases": bases,
            "llm_api_key_envs": dict.fromkeys(models, KEY_VARIABLE),
            "llm_retry_backoff_initial_seconds": 0.01,
            "llm_max_retries": 2,
            "llm_invalid_output_retries": 1,
            "llm_timeout_seconds": 5.0,
            **extra,
        }
    )


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable the configuration names for the key (a dummy: the server is local)."""
    monkeypatch.setenv(KEY_VARIABLE, "sk-test-not-a-real-key")


@pytest.fixture
def hosted(settings: Settings, openai_server: OpenAIServer) -> Settings:
    """gpt-4o-mini, served by the local server."""
    return configured(settings, [HOSTED], {HOSTED: openai_server.url})


def test_cost_comes_from_the_usage_the_server_reports(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    openai_server.then(
        ScriptedReply(content=VALID, prompt_tokens=1000, cached_tokens=400, completion_tokens=500)
    )

    result = complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert result.value == Verdict(label="relevant", confidence=0.9)
    assert not result.cached
    (event,) = result.cost_events
    # 600 uncached input at $0.15/M, 400 cached at $0.075/M, 500 output at $0.60/M.
    assert event["amount_usd_micros"] == 90 + 30 + 300
    assert (event["input_tokens"], event["cached_tokens"], event["output_tokens"]) == (
        600,
        400,
        500,
    )
    assert (event["provider"], event["model"], event["unit"]) == ("openai", "gpt-4o-mini", "tokens")
    assert (event["customer_id"], event["job_id"], event["stage"]) == (
        context.customer_id,
        context.job_id,
        "analyse",
    )
    (request,) = openai_server.requests
    assert request["authorization"] == "Bearer sk-test-not-a-real-key"
    assert request["body"]["response_format"]["json_schema"]["name"] == "Verdict"


def test_rate_limited_then_success_is_retried_and_costed_once(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    openai_server.then(ScriptedReply(status=429))
    openai_server.then(ScriptedReply(content=VALID, prompt_tokens=100, completion_tokens=10))

    result = complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert result.value.label == "relevant"
    assert len(openai_server.requests) == 2
    (event,) = result.cost_events
    assert event["input_tokens"] == 100


def test_reply_fenced_as_markdown_is_accepted(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    openai_server.then(ScriptedReply(content=f"```json\n{VALID}\n```"))

    result = complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert result.value.label == "relevant"
    assert len(openai_server.requests) == 1


def test_lasting_rate_limit_is_transient_after_the_retries(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    openai_server.always(ScriptedReply(status=429))

    with pytest.raises(TransientError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert raised.value.reason is Reason.PROVIDER_RATE_LIMITED
    assert len(openai_server.requests) == hosted.llm_max_retries + 1


def test_server_errors_fall_back_to_the_next_model(
    settings: Settings,
    openai_server: OpenAIServer,
    other_openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    both = configured(
        settings,
        [HOSTED, SELF_HOSTED],
        {HOSTED: openai_server.url, SELF_HOSTED: other_openai_server.url},
    )
    openai_server.always(ScriptedReply(status=503))
    other_openai_server.then(ScriptedReply(content=VALID, prompt_tokens=10, completion_tokens=5))

    result = complete("classify", messages, Verdict, context, prices=prices, settings=both)

    assert result.model == SELF_HOSTED
    assert len(openai_server.requests) == both.llm_max_retries + 1
    # Only the call that answered is paid: 10 x 1 + 5 x 2 micro-dollars.
    assert [e["amount_usd_micros"] for e in result.cost_events] == [20]


def test_unreachable_provider_is_transient_unavailable(
    settings: Settings, context: LLMContext, messages: list[dict[str, Any]], prices: PriceBook
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    nowhere = configured(settings, [HOSTED], {HOSTED: "http://127.0.0.1:9/v1"}, llm_max_retries=0)

    with pytest.raises(TransientError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=nowhere)

    assert raised.value.reason is Reason.PROVIDER_UNAVAILABLE


def test_refused_credentials_are_permanent_and_not_retried(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    """A 401 is the operator's to fix (then replay): dead-lettered, not retried forever."""
    openai_server.always(ScriptedReply(status=401))

    with pytest.raises(PermanentError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert raised.value.reason is Reason.PROVIDER_AUTH_FAILED
    assert len(openai_server.requests) == 1


def test_a_key_variable_that_is_not_set_fails_before_any_call(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_VARIABLE)

    with pytest.raises(PermanentError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert raised.value.reason is Reason.PROVIDER_AUTH_FAILED
    assert KEY_VARIABLE in raised.value.message
    assert "sk-test" not in str(raised.value)
    assert openai_server.requests == []


def test_slow_provider_times_out_as_transient(
    settings: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    impatient = configured(
        settings,
        [HOSTED],
        {HOSTED: openai_server.url},
        llm_timeout_seconds=0.3,
        llm_max_retries=0,
    )
    openai_server.then(ScriptedReply(content=VALID, delay_seconds=1.5))

    with pytest.raises(TransientError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=impatient)

    assert raised.value.reason is Reason.TIMEOUT


def test_invalid_json_is_retried_then_invalid_llm_output(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    openai_server.always(ScriptedReply(content="Sure! The label is relevant."))

    with pytest.raises(InvalidLLMOutputError) as raised:
        complete("classify", messages, Verdict, context, prices=prices, settings=hosted)

    assert isinstance(raised.value, PermanentError)
    assert raised.value.reason is Reason.INVALID_LLM_OUTPUT
    attempts = hosted.llm_invalid_output_retries + 1
    assert len(openai_server.requests) == attempts
    # The retry shows the model its reply and asks again.
    retry_messages = openai_server.requests[-1]["body"]["messages"]
    assert retry_messages[-2]["content"] == "Sure! The label is relevant."
    # Both calls were paid for and are reported, each under its own event id.
    assert len({event["event_id"] for event in costs_of(raised.value)}) == attempts


def test_switching_provider_is_configuration_only(
    settings: Settings,
    openai_server: OpenAIServer,
    other_openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    reply = ScriptedReply(content=VALID, prompt_tokens=50, completion_tokens=20)
    openai_server.then(reply)
    other_openai_server.then(reply)
    first = configured(settings, [HOSTED], {HOSTED: openai_server.url})
    second = configured(settings, [SELF_HOSTED], {SELF_HOSTED: other_openai_server.url})

    a = complete("classify", messages, Verdict, context, prices=prices, settings=first)
    b = complete("classify", messages, Verdict, context, prices=prices, settings=second)

    assert a.value == b.value
    assert [r["body"]["model"] for r in openai_server.requests] == ["gpt-4o-mini"]
    assert [r["body"]["model"] for r in other_openai_server.requests] == ["y"]
    assert (b.cost_events[0]["provider"], b.cost_events[0]["model"]) == ("hosted_vllm", "y")
    assert b.cost_events[0]["amount_usd_micros"] == 50 * 1 + 20 * 2


def test_the_same_jobs_call_again_reports_the_paid_calls_again(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
    db_pool: Pool,
) -> None:
    """A delivery killed after the answer was stored, before its costs reached the ledger:
    the redelivery finds the answer and bills the same paid calls, under the same ids."""
    openai_server.then(ScriptedReply(content="not JSON", prompt_tokens=100, completion_tokens=10))
    openai_server.then(ScriptedReply(content=VALID, prompt_tokens=120, completion_tokens=10))

    first = complete(
        "classify", messages, Verdict, context, pool=db_pool, prices=prices, settings=hosted
    )
    again = complete(
        "classify", messages, Verdict, context, pool=db_pool, prices=prices, settings=hosted
    )

    assert len(openai_server.requests) == 2  # the invalid reply and the valid one, once
    assert not first.cached and again.cached
    assert again.value == first.value
    assert len(first.cost_events) == 2
    assert all(event["amount_usd_micros"] > 0 for event in first.cost_events)
    assert again.cost_events == first.cost_events


def test_another_job_with_the_same_prompt_calls_the_model_and_pays(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
    db_pool: Pool,
) -> None:
    """No answer, and no bill, is shared between jobs, nor between customers."""
    openai_server.always(ScriptedReply(content=VALID, prompt_tokens=100, completion_tokens=10))
    same_customer = replace(context, job_id=f"j-{uuid.uuid4()}")
    other_customer = LLMContext(f"c-{uuid.uuid4()}", f"j-{uuid.uuid4()}", context.stage)
    jobs = [context, same_customer, other_customer]

    results = [
        complete("classify", messages, Verdict, job, pool=db_pool, prices=prices, settings=hosted)
        for job in jobs
    ]

    assert len(openai_server.requests) == len(jobs)
    # 100 input tokens at $0.15/M and 10 output at $0.60/M, each job for its own call.
    for job, result in zip(jobs, results, strict=True):
        assert not result.cached
        (event,) = result.cost_events
        assert (event["customer_id"], event["job_id"]) == (job.customer_id, job.job_id)
        assert event["amount_usd_micros"] == 15 + 6
    assert len({result.cost_events[0]["event_id"] for result in results}) == len(jobs)


def test_the_cache_key_covers_the_job_the_model_and_the_prompt(
    context: LLMContext, messages: list[dict[str, Any]]
) -> None:
    other = [messages[0], {"role": "user", "content": "Is this about hiring?"}]
    parameters = {"temperature": 0.0}
    key = cache_key(context, HOSTED, messages, parameters)
    assert key != cache_key(context, HOSTED, other, parameters)
    assert key != cache_key(context, SELF_HOSTED, messages, parameters)
    assert key != cache_key(replace(context, job_id="j-other"), HOSTED, messages, parameters)
    assert key != cache_key(replace(context, customer_id="c-other"), HOSTED, messages, parameters)
    assert key != cache_key(replace(context, stage="synthesise"), HOSTED, messages, parameters)
    assert key == cache_key(context, HOSTED, messages, dict(parameters))


def test_over_budget_is_rejected_before_any_call(
    hosted: Settings,
    openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    asked: list[str] = []

    def over_budget(customer_id: str) -> bool:
        asked.append(customer_id)
        return True

    with pytest.raises(PermanentError) as raised:
        complete(
            "classify",
            messages,
            Verdict,
            context,
            over_budget=over_budget,
            prices=prices,
            settings=hosted,
        )

    assert raised.value.reason is Reason.BUDGET_EXCEEDED
    assert asked == [context.customer_id]
    assert openai_server.requests == []


def test_over_budget_steps_down_to_the_configured_model(
    settings: Settings,
    openai_server: OpenAIServer,
    other_openai_server: OpenAIServer,
    context: LLMContext,
    messages: list[dict[str, Any]],
    prices: PriceBook,
) -> None:
    stepping_down = configured(
        settings,
        [HOSTED],
        {HOSTED: openai_server.url, SELF_HOSTED: other_openai_server.url},
        llm_over_budget_model=SELF_HOSTED,
    )
    other_openai_server.then(ScriptedReply(content=VALID))

    result = complete(
        "classify",
        messages,
        Verdict,
        context,
        over_budget=lambda _: True,
        prices=prices,
        settings=stepping_down,
    )

    assert result.model == SELF_HOSTED
    assert openai_server.requests == []


def test_stable_prefix_is_marked_cacheable_only_where_the_provider_supports_it(
    messages: list[dict[str, Any]],
) -> None:
    anthropic = mark_cacheable_prefix("anthropic/claude-sonnet-4-20250514", messages)
    assert anthropic[0]["content"] == [
        {
            "type": "text",
            "text": messages[0]["content"],
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert anthropic[1] == messages[1]
    assert mark_cacheable_prefix(HOSTED, messages) == messages
