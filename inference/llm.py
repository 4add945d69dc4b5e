"""The one way a stage asks a language model for structured output: ``complete``.

Everything the old script got wrong about model calls is decided here, once: which
model serves a task (configuration, with an ordered fallback list), whether the
customer may spend more (an injected budget check), whether this job already has the
answer (a response cache in PostgreSQL, scoped to the job: a redelivery reuses the
answer and reports the paid calls again, never another job's), how provider faults
are retried and classified (litellm's exceptions become the platform's transient
reasons at this edge), whether the reply has the promised shape (validated against a
pydantic schema, retried, then ``invalid_llm_output``), and what the call cost (one
CostEvent per paid call, attributed to customer, job, stage, provider and model).
Swapping a provider or a model is configuration only: litellm model strings, base
URLs and key variable names all come from the settings object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Generic, TypeVar

import litellm
from litellm.utils import supports_prompt_caching
from pydantic import BaseModel, ValidationError

from inference.extractive import register_extractive_provider
from inference.pricing import PriceBook, load_pricing
from sinks.db import Pool, transaction
from sinks.llm_cache import CachedAnswer, get_cached, put_cached
from telemetry.cpu import measure_cpu
from vidinsight.errors import (
    PermanentError,
    Reason,
    TransientError,
    VidinsightError,
    attach_costs,
    costs_of,
)
from vidinsight.settings import Settings, get_settings

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=BaseModel)
Message = dict[str, Any]
# Given a customer id, True when that customer may not spend more this month.
BudgetCheck = Callable[[str], bool]

# Providers that honour Anthropic-style ``cache_control`` markers on message parts.
_CACHE_CONTROL_PROVIDERS = frozenset({"anthropic", "bedrock", "vertex_ai"})
_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://vidinsight/cost-events/llm")


@dataclass(frozen=True)
class LLMContext:
    """Whose job a call serves: every cost it incurs is attributed to these."""

    customer_id: str
    job_id: str
    stage: str


@dataclass(frozen=True)
class LLMResult(Generic[ResponseT]):
    """A validated answer, the model that gave it, and the cost events of getting it."""

    value: ResponseT
    model: str
    cached: bool
    cost_events: list[dict[str, Any]] = field(default_factory=list)


class InvalidLLMOutputError(PermanentError):
    """Every attempt replied outside the schema; the calls were still paid for."""

    def __init__(self, message: str, cost_events: list[dict[str, Any]]) -> None:
        super().__init__(Reason.INVALID_LLM_OUTPUT, message)
        attach_costs(self, cost_events)


def complete(
    task: str,
    messages: Sequence[Message],
    response_model: type[ResponseT],
    context: LLMContext,
    *,
    pool: Pool | None = None,
    over_budget: BudgetCheck | None = None,
    prices: PriceBook | None = None,
    settings: Settings | None = None,
) -> LLMResult[ResponseT]:
    """Answer ``messages`` for ``task`` as a ``response_model``, trying the task's models in order.

    ``pool`` enables the response cache; ``over_budget`` is asked before any model is
    called (none given: no budget applies). A model that stays unavailable after its
    retries hands over to the next one; the last one's error is raised.
    """
    settings = settings or get_settings()
    prices = prices or load_pricing()
    register_extractive_provider()
    last_error: TransientError | None = None
    paid: list[dict[str, Any]] = []  # by models that then became unavailable
    for model in _models_for(task, context, over_budget, settings):
        try:
            result = _complete_with(
                model, task, list(messages), response_model, context, pool, prices, settings
            )
        except TransientError as exc:
            logger.warning(
                "model unavailable, trying the next one",
                extra={"model": model, "task": task, "reason": exc.reason.value},
            )
            attach_costs(exc, paid)  # it carries every model's paid calls so far
            paid = [dict(event) for event in costs_of(exc)]
            last_error = exc
            continue
        except Exception as exc:
            attach_costs(exc, paid)
            raise
        return replace(result, cost_events=[*paid, *result.cost_events])
    assert last_error is not None  # _models_for never returns an empty list
    raise last_error


def _models_for(
    task: str, context: LLMContext, over_budget: BudgetCheck | None, settings: Settings
) -> list[str]:
    """The task's models in fallback order, or the step-down model when over budget."""
    models = settings.llm_models.get(task) or settings.llm_models.get("default") or []
    if not models:
        raise PermanentError(Reason.INVALID_REQUEST, f"no model configured for task {task!r}")
    if over_budget is None or not over_budget(context.customer_id):
        return list(models)
    if settings.llm_over_budget_model:
        return [settings.llm_over_budget_model]
    raise PermanentError(
        Reason.BUDGET_EXCEEDED, f"customer {context.customer_id} is over its monthly budget"
    )


def _complete_with(
    model: str,
    task: str,
    messages: list[Message],
    response_model: type[ResponseT],
    context: LLMContext,
    pool: Pool | None,
    prices: PriceBook,
    settings: Settings,
) -> LLMResult[ResponseT]:
    """One model: the cache, then paid calls until a reply validates or the retries run out."""
    provider, model_name = split_model(model)
    prices.price(provider, model_name)  # an unpriced model is refused before it costs money
    parameters = _parameters(response_model, settings)
    key = cache_key(context, model, messages, parameters)
    cached = _cached_answer(pool, key)
    if cached is not None:
        value = response_model.model_validate(cached.response)
        return LLMResult(value, model, True, cached.cost_events)
    events: list[dict[str, Any]] = []
    conversation = mark_cacheable_prefix(model, messages)
    for attempt in range(settings.llm_invalid_output_retries + 1):
        try:
            with measure_cpu(context.stage, provider, model_name):
                response = _call_with_retries(model, conversation, parameters, settings)
        except Exception as exc:
            attach_costs(exc, events)  # the invalid replies before this failure were paid
            raise
        events.append(_cost_event(model, response, context, task, key, attempt, prices))
        reply = _reply_text(response)
        try:
            value = response_model.model_validate_json(json_body(reply))
        except ValidationError as exc:
            logger.warning(
                "reply does not match the schema",
                extra={
                    "model": model,
                    "task": task,
                    "attempt": attempt,
                    "errors": exc.error_count(),
                },
            )
            conversation = [*conversation, *_correction(reply, exc)]
            continue
        _store_answer(pool, key, model, value, events)
        return LLMResult(value, model, False, events)
    raise InvalidLLMOutputError(
        f"{model} gave no valid {response_model.__name__} for task {task!r} "
        f"in {settings.llm_invalid_output_retries + 1} attempts",
        events,
    )


def split_model(model: str) -> tuple[str, str]:
    """A litellm model string as (provider, model name), e.g. ("openai", "gpt-4o-mini")."""
    name, provider, _, _ = litellm.get_llm_provider(model)
    return provider, name


def _parameters(response_model: type[BaseModel], settings: Settings) -> dict[str, Any]:
    """Everything besides the messages that shapes the answer, and so keys the cache."""
    return {
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_output_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": response_model.__name__,
                "schema": response_model.model_json_schema(),
            },
        },
    }


def cache_key(
    context: LLMContext, model: str, messages: Sequence[Message], parameters: dict[str, Any]
) -> str:
    """sha256 of customer, job, stage, model, messages and parameters.

    Only the same job's same call (a redelivery, a retry) finds its answer: another job,
    of this customer or another, calls the model itself and is billed for it, so no
    bill depends on which job happened to run first.
    """
    canonical = json.dumps(
        {
            "context": asdict(context),
            "model": model,
            "messages": list(messages),
            "parameters": parameters,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _cached_answer(pool: Pool | None, key: str) -> CachedAnswer | None:
    """The stored answer for ``key`` and its paid calls (None without a cache or a hit)."""
    if pool is None:
        return None
    with transaction(pool) as conn:
        return get_cached(conn, key)


def _store_answer(
    pool: Pool | None,
    key: str,
    model: str,
    value: BaseModel,
    events: list[dict[str, Any]],
) -> None:
    """Keep a validated answer with the cost events of the calls that paid for it.

    A delivery killed after this and before its cost events reach the ledger is retried;
    the retry finds the answer and re-emits these events (same ids), so the job is billed
    exactly as if nothing had failed. A concurrent first writer wins and that is fine:
    its events carry the same deterministic ids.
    """
    if pool is None:
        return
    with transaction(pool) as conn:
        put_cached(conn, key, model, value.model_dump(mode="json"), events)


def mark_cacheable_prefix(model: str, messages: list[Message]) -> list[Message]:
    """Mark the stable prefix (all but the last message) cacheable where the provider can.

    The transcript goes in the prefix and the task-specific ask last, so the several
    calls analysing one transcript pay full price for it once.
    """
    provider, _ = split_model(model)
    if len(messages) < 2 or provider not in _CACHE_CONTROL_PROVIDERS:
        return list(messages)
    if not supports_prompt_caching(model=model):
        return list(messages)
    marked = [dict(message) for message in messages]
    last_prefix = marked[-2]
    content = last_prefix.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    if parts:
        parts[-1] = {**parts[-1], "cache_control": {"type": "ephemeral"}}
    last_prefix["content"] = parts
    return marked


def _call_with_retries(
    model: str, messages: list[Message], parameters: dict[str, Any], settings: Settings
) -> Any:
    """One successful litellm call, retrying 429, 5xx and timeouts.

    litellm's own retries are turned off (``num_retries=0``, ``max_retries=0``) so the
    attempts, the backoff and the reason raised when they run out are all decided here.
    """
    delay = settings.llm_retry_backoff_initial_seconds
    for attempt in range(settings.llm_max_retries + 1):
        try:
            response = litellm.completion(
                model=model,
                messages=messages,
                timeout=settings.llm_timeout_seconds,
                num_retries=0,
                max_retries=0,
                drop_params=True,
                **_connection(model, settings),
                **parameters,
            )
            return response
        except Exception as exc:
            error = translate_provider_error(exc)
            if error is None:
                raise
            if not isinstance(error, TransientError) or attempt == settings.llm_max_retries:
                raise error from exc
            logger.info(
                "provider call failed, retrying",
                extra={"model": model, "attempt": attempt, "reason": error.reason.value},
            )
        time.sleep(delay)
        delay = min(delay * 2, settings.llm_retry_backoff_max_seconds)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _connection(model: str, settings: Settings) -> dict[str, Any]:
    """The configured base URL and API key of ``model`` (the key read from its variable)."""
    connection: dict[str, Any] = {}
    if model in settings.llm_api_bases:
        connection["api_base"] = settings.llm_api_bases[model]
    key_variable = settings.llm_api_key_envs.get(model)
    if key_variable:
        if not os.environ.get(key_variable):
            raise PermanentError(
                Reason.PROVIDER_AUTH_FAILED,
                f"{model}: its API key variable {key_variable} is not set in this process",
            )
        connection["api_key"] = os.environ[key_variable]
    return connection


def translate_provider_error(exc: BaseException) -> VidinsightError | None:
    """litellm's exception as the platform's error: transient for what passes (429, 5xx,
    timeouts, refused connections), permanent for refused credentials; None otherwise."""
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return PermanentError(
            Reason.PROVIDER_AUTH_FAILED, f"provider refused the credentials ({type(exc).__name__})"
        )
    if isinstance(exc, litellm.Timeout):
        return TransientError(Reason.TIMEOUT, f"provider timed out: {type(exc).__name__}")
    if isinstance(exc, litellm.RateLimitError):
        return TransientError(Reason.PROVIDER_RATE_LIMITED, "provider rate limit (429)")
    if isinstance(exc, litellm.APIConnectionError):
        return TransientError(Reason.PROVIDER_UNAVAILABLE, "provider unreachable")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 500:
        return TransientError(Reason.PROVIDER_UNAVAILABLE, f"provider answered {status}")
    return None


def _reply_text(response: Any) -> str:
    """The assistant's text in a chat completion ("" if there is none)."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    return choices[0].message.content or ""


def json_body(reply: str) -> str:
    """The JSON of a reply, without the Markdown code fence many chat models wrap it in."""
    text = reply.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3]
        first_line, _, rest = text.partition("\n")
        text = rest if first_line.strip().isalpha() or not first_line.strip() else text
    return text.strip()


def _correction(reply: str, error: ValidationError) -> list[Message]:
    """Show the model its invalid reply and what was wrong, so the retry can differ."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in error.errors()[:10]
    )
    return [
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": f"That reply is not valid ({problems}). Answer with the JSON object only.",
        },
    ]


def _cost_event(
    model: str,
    response: Any,
    context: LLMContext,
    task: str,
    key: str,
    attempt: int,
    prices: PriceBook,
) -> dict[str, Any]:
    """The CostEvent of one paid call, by the tokens its usage reports (the local
    extractive provider reports an estimate of its own, never the time it took).

    Its id derives from job, stage, task, cache key and attempt, so a redelivered job
    that makes the same call again produces the same event and is charged once.
    """
    provider, model_name = split_model(model)
    event_key = f"{context.job_id}:{context.stage}:{task}:{key}:{attempt}"
    input_tokens, cached_tokens, output_tokens = token_usage(response)
    usage = {
        "input_tokens": input_tokens,
        "cached_tokens": cached_tokens,
        "output_tokens": output_tokens,
    }
    return {
        "event_id": str(uuid.uuid5(_EVENT_NAMESPACE, event_key)),
        "customer_id": context.customer_id,
        "job_id": context.job_id,
        "stage": context.stage,
        "provider": provider,
        "model": model_name,
        **usage,
        "unit": "tokens",
        "quantity": float(sum(usage.values())),
        "amount_usd_micros": prices.cost_usd_micros(provider, model_name, usage),
        "occurred_at_ms": int(time.time() * 1000),
    }


def token_usage(response: Any) -> tuple[int, int, int]:
    """(uncached input, cached input, output) tokens as the provider reported them.

    OpenAI-style usage counts cached tokens inside ``prompt_tokens``; they are split
    out because they are billed at the cached rate.
    """
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0, 0
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details else 0
    output = int(getattr(usage, "completion_tokens", 0) or 0)
    return prompt - cached, cached, output
