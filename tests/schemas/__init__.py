"""Tests of the Avro schemas and the codec."""
