"""The train stage (`python -m train`, `skinserve train`): a thin layer over the skinserve library."""
