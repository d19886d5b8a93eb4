"""Pure-Python log scanner: the reference for the rules and the fallback.

Private. ``housekeeper.scan`` is the facade; ``_scan.pyx`` is the compiled twin
with the same function and the same results, and the tests prove they agree.

The file is read in fixed chunks. Each chunk splits into a head (the end of the
line the previous chunk left open), a region of complete lines, and a tail (the
start of a line the next chunk finishes). The region is lower-cased once and each
pattern found with ``bytes.find``, so only lines with a hit are looked at one by one.
Heads and tails go through :class:`_OpenLine`, which keeps a bounded prefix of the
text and the last (longest needle - 1) bytes, so memory stays constant whatever the
length of a line.
"""

from __future__ import annotations

import os

__all__ = ["ScanTuple", "scan_fd"]

# (errors, excused, lines, pattern_indices, end_offset, end_line)
ScanTuple = tuple[int, int, list[tuple[int, bytes]], list[int], int, int]


class _OpenLine:
    """The line being read: which needles it holds so far, and a bounded prefix."""

    __slots__ = ("found", "keep", "length", "max_text", "needles", "npat", "prefix", "tail")

    def __init__(self, needles: list[bytes], npat: int, max_text: int) -> None:
        self.needles = needles
        self.npat = npat
        self.keep = max((len(n) for n in needles), default=1) - 1
        self.max_text = max_text
        self.prefix = b""
        self.length = 0
        self.tail = b""
        self.found = [False] * len(needles)

    def feed(self, piece: bytes) -> None:
        """Add bytes (no newline among them) to the line."""
        if len(self.prefix) <= self.max_text:
            self.prefix += piece[: self.max_text + 1 - len(self.prefix)]
        self.length += len(piece)
        if not piece:
            return
        text = self.tail + piece.lower()
        found = self.found
        for i, needle in enumerate(self.needles):
            if not found[i] and needle in text:
                found[i] = True
        self.tail = text[max(0, len(text) - self.keep) :]

    def text(self) -> bytes:
        """The line without a trailing \\r, cut to max_text bytes."""
        text = self.prefix
        if self.length == len(text) and text.endswith(b"\r"):
            text = text[:-1]
        return text[: self.max_text]

    def reset(self) -> None:
        self.prefix = b""
        self.length = 0
        self.tail = b""
        self.found = [False] * len(self.needles)


class _Judge:
    """Counts and records finished lines."""

    def __init__(
        self,
        patterns: tuple[bytes, ...],
        whitelist: tuple[tuple[bytes, ...], ...],
        needed: tuple[int, ...],
        max_lines: int,
        max_text: int,
    ) -> None:
        needles = list(patterns)
        index: dict[bytes, int] = {}
        self.entries: list[tuple[list[int], int]] = []
        for words, need in zip(whitelist, needed):
            positions = []
            for word in words:
                if word not in index:
                    index[word] = len(needles)
                    needles.append(word)
                positions.append(index[word])
            self.entries.append((positions, need))
        self.npat = len(patterns)
        self.line = _OpenLine(needles, self.npat, max_text)
        self.max_lines = max_lines
        self.errors = 0
        self.excused = 0
        self.lines: list[tuple[int, bytes]] = []
        self.patterns: list[int] = []

    def finish(self, lineno: int) -> None:
        """The open line ended: judge it, record it, and open the next one."""
        line = self.line
        found = line.found
        pattern = next((i for i in range(self.npat) if found[i]), -1)
        if pattern >= 0:
            self.errors += 1
            if any(sum(found[w] for w in words) >= need for words, need in self.entries):
                self.excused += 1
            elif len(self.lines) < self.max_lines:
                self.lines.append((lineno, line.text()))
                self.patterns.append(pattern)
        line.reset()


def _hit_line_starts(lowered: bytes, start: int, end: int, patterns: tuple[bytes, ...]) -> list[int]:
    """Starts of the lines in lowered[start:end] (whole lines) that hold a pattern."""
    starts = set()
    for pattern in patterns:
        i = lowered.find(pattern, start, end)
        while i >= 0:
            starts.add(lowered.rfind(b"\n", start, i) + 1 or start)
            line_end = lowered.find(b"\n", i, end)
            i = lowered.find(pattern, line_end + 1, end)
    return sorted(starts)


def scan_fd(
    fd: int,
    offset: int,
    end: int,
    first_line: int,
    patterns: tuple[bytes, ...],
    whitelist: tuple[tuple[bytes, ...], ...],
    needed: tuple[int, ...],
    complete: bool,
    max_lines: int,
    max_text: int,
    chunk_size: int,
) -> ScanTuple:
    """Scan the open file ``fd`` from byte ``offset`` (a line start) to byte ``end``.

    Arguments arrive normalised by the facade: ``patterns`` are non-empty, ASCII
    lower-cased bytes without line breaks; ``whitelist`` holds one tuple of distinct
    lower-cased word bytes per entry and ``needed`` how many of them excuse a line.

    Returns ``(errors, excused, lines, pattern_indices, end_offset, end_line)`` where
    ``lines`` are ``(line_number, raw_text_prefix)`` of the first ``max_lines``
    unexcused error lines and ``pattern_indices`` the first pattern (in order) each
    contains.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    judge = _Judge(patterns, whitelist, needed, max_lines, max_text)
    line = judge.line
    pos = offset
    lineno = first_line
    line_start = offset
    while pos < end:
        want = min(chunk_size, end - pos)
        chunk = b""
        while len(chunk) < want:
            more = os.pread(fd, want - len(chunk), pos + len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            break  # the file shrank while we read it
        n = len(chunk)
        first_nl = chunk.find(b"\n")
        if first_nl < 0:
            line.feed(chunk)
            pos += n
            continue
        line.feed(chunk[:first_nl])
        judge.finish(lineno)
        lineno += 1
        last_nl = chunk.rfind(b"\n")
        if last_nl > first_nl:
            start, stop = first_nl + 1, last_nl + 1
            lowered = chunk.lower()
            line_from = start
            for ls in _hit_line_starts(lowered, start, stop, patterns):
                lineno += chunk.count(b"\n", line_from, ls)
                le = chunk.find(b"\n", ls, stop)
                line.feed(chunk[ls:le])
                judge.finish(lineno)
                lineno += 1
                line_from = le + 1
            lineno += chunk.count(b"\n", line_from, stop)
        line_start = pos + last_nl + 1
        line.feed(chunk[last_nl + 1 :])
        pos += n
    if line.length > 0:
        if complete:
            judge.finish(lineno)
            lineno += 1
        else:
            pos = line_start
    return judge.errors, judge.excused, judge.lines, judge.patterns, pos, lineno
