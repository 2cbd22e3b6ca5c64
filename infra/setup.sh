#!/usr/bin/env bash
# Creates ./.venv with the pinned stack (requirements.lock + overrides.txt, see the comments there)
# and installs tfflows into it in editable mode. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
[ -x .venv/bin/python ] || uv venv --quiet -p python3.11 .venv
uv pip install --quiet -p .venv/bin/python --override overrides.txt -r requirements.lock
uv pip install --quiet -p .venv/bin/python --no-deps -e .
