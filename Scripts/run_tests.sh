#!/usr/bin/env bash
# The test command: sets up the environment, then runs the whole pytest suite on all cores.
# Extra arguments go to pytest (e.g. `bash Scripts/run_tests.sh -k geometry`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$root/Scripts/setup_env.sh" test)"
cd "$root"
exec "$py" -m pytest -n "${REGSEG_TEST_WORKERS:-2}" --durations=15 "$@"
