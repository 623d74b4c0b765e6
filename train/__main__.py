"""`python -m train`: the training stage lands with the train issue; until then it says so and exits non-zero."""

import sys

sys.exit(
    "skinserve: the training stage is not in this release yet (see the train issue); "
    "`skinserve data` prepares the datasets it will read."
)
