"""Toy parts, one file each, that tests/integration/test_toy_parts.py registers and runs through a sweep: the
extension recipes of docs/architecture.md, proven to cost what they say."""
