"""`python -m train`: the same command as `skinserve train`."""

from train.cli import main

main()
