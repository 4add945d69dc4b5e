"""The insight schema: what analysing one transcript produces, whichever provider fills it.

It lives in ``inference`` so the LLM layer can validate replies against it, the
extractive provider can fill it, and the analyse stage can store it, all from one
definition. Times are seconds from the start of the video.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SentimentLabel = Literal["positive", "neutral", "negative"]


class Sentiment(BaseModel):
    """A label and a score in [-1, 1] (negative to positive)."""

    label: SentimentLabel
    score: float = Field(ge=-1.0, le=1.0)


class Chapter(BaseModel):
    """One contiguous part of the video about one topic."""

    start_seconds: float = Field(ge=0.0)
    end_seconds: float = Field(ge=0.0)
    title: str
    summary: str
    sentiment: Sentiment


class KeyMoment(BaseModel):
    """A sentence worth jumping to, with where it is said."""

    at_seconds: float = Field(ge=0.0)
    text: str


class ActionItem(BaseModel):
    """Something a named person is to do: who, what, and when if said."""

    owner: str = Field(min_length=1)
    task: str
    due: str | None = None
    at_seconds: float = Field(ge=0.0)


class Insights(BaseModel):
    """Everything the analysis of one transcript yields."""

    summary: str
    chapters: list[Chapter]
    topics: list[str]
    keywords: list[str]
    key_moments: list[KeyMoment]
    sentiment: Sentiment
    entities: list[str]
    action_items: list[ActionItem]
    questions: list[str]
