"""`python -m export`: the same command as `skinserve export`."""

from export.cli import main

main()
