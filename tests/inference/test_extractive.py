"""The offline default on a script whose topics, names and action items are known.

The transcript goes through ``complete`` and litellm to the ``local/extractive``
provider, exactly as the analyse stage will send it, and comes back as Insights.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid

import pytest

from inference.insight_schema import Insights
from inference.llm import LLMContext, LLMResult, complete
from inference.pricing import load_pricing
from inference.prompts import load_prompt
from inference.prompts.transcript import Segment, TranscriptText, render_transcript
from inference.prompts.windows import estimated_tokens
from vidinsight.settings import REPO_ROOT, Settings

DURATION_SECONDS = 120.0
# The picture changes where the topic does (40 s, 80 s), and once within the first topic.
SCENE_CUTS_SECONDS = [25.0, 40.0, 80.0]
SCRIPT = [
    (0, 5, "Good morning everyone, welcome to the quarterly planning meeting."),
    (5, 11, "First we review the marketing budget for the next quarter."),
    (11, 18, "The marketing budget grew by ten percent and spending stayed under budget."),
    (18, 25, "Alice will send the updated budget report to finance by Friday."),
    (25, 32, "The advertising budget is the largest line in the marketing budget."),
    (32, 39, "Marketing spending on advertising stays within the budget this quarter."),
    (40, 46, "Next, the hiring plan for the engineering team."),
    (46, 53, "We need three engineers and one designer in the hiring plan."),
    (53, 60, "Bob, please schedule the interviews with the engineering candidates next week."),
    (60, 70, "Hiring senior engineers is difficult and the interviews take time."),
    (80, 86, "Finally, the product launch in May."),
    (86, 93, "The launch will happen in May if the beta testing goes well."),
    (93, 100, "Carol is going to update the launch checklist and the product page."),
    (100, 108, "Customers are excited about the product launch and the new features."),
    (108, 115, "What is the launch date for the European customers?"),
]


TRANSCRIPT = TranscriptText(
    duration_seconds=DURATION_SECONDS,
    scene_cuts_seconds=SCENE_CUTS_SECONDS,
    segments=[Segment(float(start), float(end), text) for start, end, text in SCRIPT],
)
MESSAGES = [
    {"role": "system", "content": load_prompt("insights", 1)},
    {"role": "user", "content": render_transcript(TRANSCRIPT)},
]


@pytest.fixture(scope="module")
def analysed(settings: Settings) -> LLMResult[Insights]:
    """The script analysed once by the extractive provider through the LLM entry point."""
    extractive = settings.model_copy(update={"llm_models": {"default": ["local/extractive"]}})
    context = LLMContext(f"c-{uuid.uuid4()}", f"j-{uuid.uuid4()}", "analyse")
    return complete("insights", MESSAGES, Insights, context, settings=extractive)


def test_summary_and_keywords_contain_the_key_terms(analysed: LLMResult[Insights]) -> None:
    insights = analysed.value
    for term in ("budget", "hiring", "launch"):
        assert term in insights.summary.lower()
        assert term in insights.keywords
    assert insights.topics[:3] == ["budget", "hiring", "launch"]


def test_every_action_item_names_its_owner(analysed: LLMResult[Insights]) -> None:
    items = {item.owner: item for item in analysed.value.action_items}
    assert set(items) == {"Alice", "Bob", "Carol"}
    assert items["Alice"].task.startswith("send the updated budget report")
    assert items["Alice"].due == "by Friday"
    assert items["Bob"].due == "next week"
    assert "checklist" in items["Carol"].task


def test_chapters_are_ordered_non_overlapping_and_cover_the_video(
    analysed: LLMResult[Insights],
) -> None:
    chapters = analysed.value.chapters
    assert chapters[0].start_seconds == 0.0
    assert chapters[-1].end_seconds == DURATION_SECONDS
    for chapter, following in itertools.pairwise(chapters):
        assert chapter.start_seconds < chapter.end_seconds == following.start_seconds
    # Split at the cuts where the topic changes, not at the cut within the first topic.
    assert [c.start_seconds for c in chapters] == [0.0, 40.0, 80.0]


def test_questions_entities_and_sentiment(analysed: LLMResult[Insights]) -> None:
    insights = analysed.value
    assert insights.questions == ["What is the launch date for the European customers?"]
    assert {"Alice", "Bob", "Carol"} <= set(insights.entities)
    assert "Marketing" not in insights.entities  # capitalised only because it opens a sentence
    assert insights.chapters[2].sentiment.label == "positive"
    assert insights.chapters[1].sentiment.label == "negative"


def test_its_cost_is_a_token_estimate_of_prompt_and_reply(
    analysed: LLMResult[Insights],
) -> None:
    (event,) = analysed.cost_events
    assert (event["provider"], event["model"], event["unit"]) == ("local", "extractive", "tokens")
    prompt = "\n".join(message["content"] for message in MESSAGES)
    reply = analysed.value.model_dump_json()
    assert event["input_tokens"] == estimated_tokens(prompt) > 0
    assert event["output_tokens"] == estimated_tokens(reply) > 0
    assert event["quantity"] == event["input_tokens"] + event["output_tokens"]
    price = load_pricing().price("local", "extractive").micros_per_unit
    assert price["input_tokens"] > 0 and price["output_tokens"] > 0


# Asks the extractive provider once, in a process of its own, and prints what it answered.
_ASK_IN_A_PROCESS = """
import json, sys
import litellm
from inference.extractive import register_extractive_provider
register_extractive_provider()
response = litellm.completion(model="local/extractive", messages=json.load(sys.stdin))
usage = response.usage
print(json.dumps([response.choices[0].message.content, usage.prompt_tokens,
                  usage.completion_tokens]))
"""


def _ask_in_a_process(hash_seed: str) -> list[object]:
    """The reply and usage of one call in a fresh interpreter with ``hash_seed``."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", _ASK_IN_A_PROCESS],
        input=json.dumps(MESSAGES),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    answer: list[object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_the_same_prompt_costs_the_same_in_every_process(
    analysed: LLMResult[Insights],
) -> None:
    """A worker restarted after a crash analyses the job again in a new process, whose
    string hashing differs: its reply, and the tokens billed, must not. (Under seeds 1
    and 3, ranking terms in a set's order gave replies of different lengths.)"""
    (event,) = analysed.cost_events
    expected = [analysed.value.model_dump_json(), event["input_tokens"], event["output_tokens"]]
    assert _ask_in_a_process("1") == _ask_in_a_process("3") == expected
