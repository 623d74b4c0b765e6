#!/usr/bin/env bash
# The wheels benchmarks/gpu_serving.py installs on the device (--wheels .whl): bentoml, locust and skinserve's own
# serving dependencies, built for the device's Python 3.12 on x86-64, less the packages its image already has
# (the list in /work/.library/device/KINDS.md). Versions are this project's venv's, so both boxes run the same code.
# As ../shared/baselines/fetch_wheels.sh does, rewritten because that one appends to .git/info/exclude, which a git
# worktree does not have (its .git is a file); /.whl/ is in .gitignore. About 20 MB; the carry limit is 64 MiB.
# Usage, from the repo root: bash benchmarks/gpu_wheels.sh [OUT_DIR, default .whl]
set -euo pipefail
out=${1:-.whl}
python=${PYTHON:-python3}
kinds=${SKINSERVE_DEVICE_KINDS:-/work/.library/device/KINDS.md}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

platforms=()
for n in 39 35 34 31 28 27 24 17 5; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$python" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d "$tmp" \
  "bentoml==1.4.40" "locust==2.47.0" "pydantic==2.14.4" "pydantic-settings==2.16.3" "fastapi==0.165.0" \
  "sqlalchemy==2.1.9" "alembic==1.20.1" "httptools==0.9.0"

# What the image has (normalised names), so the carried set stays small and the image's torch stack is untouched.
have=""
if [ -f "$kinds" ]; then
  have=$(sed -n 's/.*Packages: //p' "$kinds" | tr ',' '\n' | sed 's/[ .]*$//; s/^ *//' | tr 'A-Z_.' 'a-z--')
fi
mkdir -p "$out"
for wheel in "$tmp"/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  echo "$have" | grep -qx "$name" || cp "$wheel" "$out"/
done
du -sh "$out"
ls "$out" | wc -l
