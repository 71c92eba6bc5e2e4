#!/usr/bin/env bash
# Install sideman (core only, no TensorFlow) and play live: scripts/play.sh [sideman run options]
# Without an ALSA sequencer or a running JACK server, a private JACK server runs for the length of the run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"

jack_is_running() { jack_lsp >/dev/null 2>&1; }

if [ "$(uname -s)" = Linux ] && [ ! -e /dev/snd/seq ] && ! jack_is_running; then
    if ! command -v jackd >/dev/null; then
        echo "play.sh: no ALSA sequencer, no JACK server and no jackd; install JACK (sudo apt-get install jackd2)" >&2
        exit 1
    fi

    export JACK_DEFAULT_SERVER="sideman-$$"
    jack_log="${TMPDIR:-/tmp}/$JACK_DEFAULT_SERVER.log"
    echo "play.sh: no ALSA sequencer or JACK server found; running a private JACK server '$JACK_DEFAULT_SERVER' (dummy driver, log $jack_log)"
    jackd --no-realtime -n "$JACK_DEFAULT_SERVER" -d dummy -r 48000 -p 64 >"$jack_log" 2>&1 &
    jack_pid=$!
    trap 'kill "$jack_pid" 2>/dev/null && wait "$jack_pid" 2>/dev/null || true' EXIT

    for _ in $(seq 50); do
        jack_is_running && break
        sleep 0.2
    done
    if ! jack_is_running; then
        echo "play.sh: the JACK server did not start within 10 s; see $jack_log" >&2
        exit 1
    fi
fi

"$repo/.venv/bin/sideman" run --show "$@"
