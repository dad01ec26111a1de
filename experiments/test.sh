#!/usr/bin/env bash
# Sets up the environment (see setup.sh) and runs the test suite on 8 fake CPU devices.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/setup.sh" test
set -u
cd "$here/.."
# Two workers (one per core of the 2-core CI machine), each test file kept on one worker so its
# module fixtures run once; BONJAX_TEST_WORKERS=0 runs in one process.
workers="${BONJAX_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  exec python -m pytest -q "$@"
fi
exec python -m pytest -q -n "$workers" --dist loadfile "$@"
