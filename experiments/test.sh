#!/usr/bin/env bash
# Sets up the environment (see setup.sh) and runs the test suite on 8 fake CPU devices.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/setup.sh" test
set -u
cd "$here/.."
exec python -m pytest -q "$@"
