#!/usr/bin/env bash
# Create .venv in the repository and install sideman into it; running it again updates the install.
# Usage: scripts/setup.sh [--train] [--test] [--link]
# (extras: train = TensorFlow, test = pytest and hypothesis, link = aalink for Ableton Link)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

extras=()
for option in "$@"; do
    case "$option" in
        --train) extras+=(train) ;;
        --test) extras+=(test) ;;
        --link) extras+=(link) ;;
        *) echo "setup.sh: unknown option '$option'; expected --train, --test or --link" >&2; exit 2 ;;
    esac
done

is_python_3_11() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

python="${PYTHON:-python3}"
if ! is_python_3_11 "$python"; then
    echo "setup.sh: sideman needs Python 3.11 or newer, but '$python' is $("$python" --version 2>&1 || echo 'not found');" \
         "install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

if ! is_python_3_11 .venv/bin/python; then
    echo "setup.sh: creating .venv with $("$python" --version)"
    "$python" -m venv --clear .venv
fi

target="."
if [ ${#extras[@]} -gt 0 ]; then
    target=".[$(IFS=,; echo "${extras[*]}")]"
fi
echo "setup.sh: installing sideman $target into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "$target"

# A machine without an ALSA sequencer and without a running JACK server needs
# jackd for MIDI ports (a JACK server with the dummy driver). The tests always start one.
has_midi_system() { [ -e /dev/snd/seq ] || jack_lsp >/dev/null 2>&1; }
needs_jackd=false
if [ "$(uname -s)" = Linux ] && ! command -v jackd >/dev/null; then
    if [[ " ${extras[*]-} " == *" test "* ]] || ! has_midi_system; then
        needs_jackd=true
    fi
fi

if $needs_jackd && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing jackd2 (a JACK server with a dummy driver, for machines without a sound card)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jackd2
elif $needs_jackd; then
    echo "setup.sh: no ALSA sequencer, no JACK server and no jackd: install JACK (Debian and Ubuntu: sudo apt-get install jackd2)" >&2
fi

# The Link tests run their peers in a network namespace of their own, made with `ip netns`.
if [[ " ${extras[*]-} " == *" link "* && " ${extras[*]-} " == *" test "* ]] && [ "$(uname -s)" = Linux ] && ! command -v ip >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup.sh: installing iproute2 (ip netns, for the Link tests)"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2
    else
        echo "setup.sh: the Link tests need the ip command: install iproute2" >&2
    fi
fi
echo "setup.sh: done"
