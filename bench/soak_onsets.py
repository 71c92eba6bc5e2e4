"""Onset error in a soak run: received note_ons paired with the notes the daemon showed, grouped by the latest OSC change."""

import bisect
from dataclasses import dataclass

import numpy as np

from bench.live import ShownNote
from bench.onsets import onset_errors
from bench.soak_receiver import ReceivedMessage
from sideman.notenames import pitch_name

ONSET_ALIGN_WINDOW = 0.05  # seconds: a received note is looked for among shown notes this close to it
ONSET_ALIGN_PROBE = 16  # notes compared by pitch to confirm where a segment of received notes starts


@dataclass
class OnsetMatch:
    """The received note_ons paired with the notes the daemon showed, and the onset errors of the pairs."""

    errors: np.ndarray  # ms, JACK-stamped, each segment's median offset removed
    ideal: np.ndarray  # seconds since play started, as shown
    walls: np.ndarray  # time.perf_counter() of each arrival
    matched: int
    unmatched_received: int
    pitch_mismatches: int


def align_segment(shown: list[ShownNote], names: list[str], walls: list[float], offset: float) -> int | None:
    """Return the index of the shown note where a segment of received notes starts, or None.

    Candidates are shown notes of the first received pitch within
    ONSET_ALIGN_WINDOW of its arrival. The arrival is its wall time minus
    `offset`, the daemon's origin on this process's clock. The candidate whose
    following pitches agree most with the received ones wins.
    """
    arrival = walls[0] - offset
    best, best_score = None, -1
    for index, note in enumerate(shown):
        if note.name != names[0] or abs(note.seconds - arrival) > ONSET_ALIGN_WINDOW:
            continue
        probe = min(ONSET_ALIGN_PROBE, len(names), len(shown) - index)
        score = sum(shown[index + k].name == names[k] for k in range(probe))
        if score > best_score:
            best, best_score = index, score
    return best


def match_onsets(shown: list[ShownNote], received: list[ReceivedMessage]) -> OnsetMatch:
    """Pair each connection segment's note_ons with the shown notes in order, from where the segment starts.

    The offset between the daemon's clock and this process's comes from the
    first segment, which starts with the first note played.
    """
    note_ons = [item for item in received if item.message.type == "note_on" and item.message.velocity > 0]
    segments: dict[int, list[ReceivedMessage]] = {}
    for item in note_ons:
        segments.setdefault(item.segment, []).append(item)
    if not note_ons or not shown:
        return OnsetMatch(np.empty(0), np.empty(0), np.empty(0), 0, len(note_ons), 0)

    first = segments[min(segments)]
    count = min(32, len(first), len(shown))
    offset = float(np.median([first[index].wall - shown[index].seconds for index in range(count)]))

    errors, ideals, walls = [], [], []
    matched = unmatched = mismatches = 0
    for items in segments.values():
        names = [pitch_name(item.message.note) for item in items]
        start = align_segment(shown, names, [item.wall for item in items], offset)
        if start is None:
            unmatched += len(items)
            continue
        pairs = min(len(items), len(shown) - start)
        ideal = np.array([shown[start + index].seconds for index in range(pairs)])
        arrivals = np.array([items[index].message.time for index in range(pairs)])
        errors.append(onset_errors(ideal, arrivals))
        ideals.append(ideal)
        walls.append(np.array([items[index].wall for index in range(pairs)]))
        matched += pairs
        unmatched += len(items) - pairs
        mismatches += sum(shown[start + index].name != names[index] for index in range(pairs))

    return OnsetMatch(concatenate(errors), concatenate(ideals), concatenate(walls), matched, unmatched, mismatches)


def concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0)


NO_CHANGE_YET = "none yet"


def errors_by_last_change(onsets: OnsetMatch, history: list[tuple[float, str]]) -> dict[str, np.ndarray]:
    """Group the absolute onset errors (ms) by the kind of the latest change sent before each note arrived.

    Notes that arrived before the first change are grouped under NO_CHANGE_YET.
    """
    times = [sent for sent, _ in history]
    groups: dict[str, list[float]] = {}
    for wall, error in zip(onsets.walls, np.abs(onsets.errors)):
        index = bisect.bisect_right(times, wall) - 1
        kind = history[index][1] if index >= 0 else NO_CHANGE_YET
        groups.setdefault(kind, []).append(float(error))
    return {kind: np.array(values) for kind, values in sorted(groups.items())}
