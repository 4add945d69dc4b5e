"""Tests of the topic catalogue and its admin."""
