"""Log parsing for a soak run: the daemon's warnings grouped by kind, its reconnections and final note count, and the JACK server's XRuns."""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


# One line of sideman's log format, "%(asctime)s %(levelname)s %(name)s: %(message)s".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
# Socket addresses and hexadecimal addresses: IPv6 in brackets, IPv4 with an optional port, 0x...
_ADDRESS = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b0x[0-9A-Fa-f]+\b")
# A sign counts only where no word ends before it, so "sideman-01" keeps its hyphen.
_NUMBER = re.compile(r"(?:(?<!\w)[-+])?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
# Lines about an output connection lost and restored, in the wording of sideman.portkeeper or any other.
CONNECTION_EVENT = re.compile(r"reconnect|connect\w* again|connection .*\b(?:lost|restored)\b|runs again", re.IGNORECASE)
# Lines that report a connection made again: one per reconnection.
RECONNECTED = re.compile(r"\b(?:restored|reconnected)\b", re.IGNORECASE)
ENGINE_STOPPED = re.compile(r"engine stopped after (\d+) notes")
WARNING_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def normalise_message(message: str) -> str:
    """Return a log message with its addresses replaced by <address> and its numbers by <n>, so repeats group together."""
    text = _ADDRESS.sub("<address>", message)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()


@dataclass
class LogGroup:
    """Log lines of one level and logger whose normalised messages are the same."""

    level: str
    logger: str
    kind: str  # the normalised message
    count: int
    example: str  # the first message of the group, as logged


def group_log_lines(text: str, levels: tuple[str, ...] = WARNING_LEVELS, pattern: re.Pattern | None = None) -> list[LogGroup]:
    """Group the log lines of `levels` (and matching `pattern`, when given) by level, logger and normalised message.

    Lines outside the log format (a traceback's lines, libjack's own output)
    are not counted. The groups come most frequent first.
    """
    groups: dict[tuple[str, str, str], LogGroup] = {}
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match is None or match["level"] not in levels:
            continue
        if pattern is not None and not pattern.search(match["message"]):
            continue
        key = (match["level"], match["logger"], normalise_message(match["message"]))
        group = groups.get(key)
        if group is None:
            groups[key] = LogGroup(*key, count=1, example=match["message"])
        else:
            group.count += 1
    return sorted(groups.values(), key=lambda group: (-group.count, group.level, group.logger, group.kind))


def connection_lines(text: str) -> list[LogGroup]:
    """Group the daemon's log lines, at any level, about connections lost and made again."""
    return group_log_lines(text, levels=("DEBUG", "INFO", *WARNING_LEVELS), pattern=CONNECTION_EVENT)


def count_reconnections(text: str) -> int:
    """Count the daemon's log lines that report a connection restored or reconnected."""
    return sum(group.count for group in connection_lines(text) if RECONNECTED.search(group.kind))


def count_xruns(jackd_log: Path) -> int | None:
    """Count the cycles the JACK server reported as late ("XRun" lines of jackd's output); None when the log is unreadable."""
    try:
        return jackd_log.read_text(errors="replace").count("XRun")
    except OSError as error:
        log.warning("cannot read the JACK server's log %s: %s", jackd_log, error)
        return None


def notes_played(log_text: str, status: dict[str, object]) -> int:
    """Return the daemon's final note count from its log line at shutdown, else from its last status reply.

    The status reply comes a moment before the daemon stops and misses the notes played in between.
    """
    counts = ENGINE_STOPPED.findall(log_text)
    return int(counts[-1]) if counts else int(status.get("notes", 0))
