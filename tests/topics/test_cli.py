"""``vidinsight topics apply|list`` as an operator runs it: output and exit codes."""

from __future__ import annotations

import argparse

import pytest

import cli.topics
from topics.catalogue import catalogue

pytestmark = pytest.mark.integration


def run(*argv: str) -> int:
    """Run ``vidinsight topics ...`` with only the topics subcommand registered."""
    parser = argparse.ArgumentParser(prog="vidinsight")
    cli.topics.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["topics", *argv])
    code: int = args.func(args)
    return code


def test_apply_twice_then_list_shows_every_topic_in_sync(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("apply") == 0
    capsys.readouterr()

    assert run("apply") == 0
    assert capsys.readouterr().out.strip() == "no changes"

    assert run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["TOPIC", "STATE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {spec.name: "ok" for spec in catalogue()}


def test_unreachable_registry_is_one_clear_line_and_a_failing_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run("apply", "--registry-url", "http://127.0.0.1:1/apis/ccompat/v7")

    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: registry_unavailable:") and "\n" not in err
    assert "Traceback" not in err


def test_unreachable_broker_is_one_clear_line_and_a_failing_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run("list", "--bootstrap", "127.0.0.1:1")

    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: broker_unavailable:") and "\n" not in err
