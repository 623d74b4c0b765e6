"""`python -m loadtests`: the same command as `skinserve loadtest`."""

from loadtests.runner import main

main()
