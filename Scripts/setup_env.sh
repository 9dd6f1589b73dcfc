#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment: torch's CPU wheel first, then RegSeg and
# the extras named as arguments (default: test). Idempotent; prints the venv's python path last.
#   bash Scripts/setup_env.sh            # test extra
#   bash Scripts/setup_env.sh core       # RegSeg alone (what the demo runs)
#   bash Scripts/setup_env.sh test bench # test + benchmark peers (antspyx, itk-elastix)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${REGSEG_VENV:-$root/.venv}"
extras="$(IFS=,; echo "${*:-test}")"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.regseg-installed-$extras"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    # The CPU wheel first, so that nothing below pulls a CUDA build of torch.
    "$py" -c "import torch" 2>/dev/null || "$py" -m pip install -q "torch==2.13.0" >&2
    if [ "$extras" = core ]; then
        "$py" -m pip install -q -e "$root" >&2
    else
        "$py" -m pip install -q -e "$root[$extras]" >&2
    fi
    touch "$stamp"
fi
echo "$py"
