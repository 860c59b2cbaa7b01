"""Test helpers and the transport conformance suite."""
