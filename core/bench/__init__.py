"""Benchmark commands (the ``uringstack bench`` group)."""
