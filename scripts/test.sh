#!/usr/bin/env bash
# Install sideman with the train, test and link extras and run the whole test suite: scripts/test.sh [pytest options]
# Tests that need real MIDI ports start their own private JACK server; the
# Link tests run in a network namespace of their own, which needs root. Here a
# missing JACK server, TensorFlow or Link requirement fails those tests
# instead of skipping them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh --train --test --link

export SIDEMAN_REQUIRE_PORTS=1 SIDEMAN_REQUIRE_TF=1 SIDEMAN_REQUIRE_LINK=1
status=0
.venv/bin/python -m pytest "$@" || status=$?

if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
