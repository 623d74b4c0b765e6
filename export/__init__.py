"""The export stage (`python -m export`, `skinserve export`): a thin layer over the skinserve library."""
