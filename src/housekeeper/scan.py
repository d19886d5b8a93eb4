"""Finding error lines in job logs (SPEC §5): the one module the package imports.

The rules
---------
* A line is an **error line** when it contains any of the error patterns
  (default :data:`DEFAULT_ERROR_PATTERNS`), case-insensitively.
* A whitelist entry is split on whitespace into words. It **excuses** an error line
  when at least ``min(whitelist_threshold, number of distinct words in the entry)``
  of its distinct words occur in the line as substrings, case-insensitively. So
  ``"WARN"`` excuses any error line containing ``warn``, and
  ``"Leap second table TAI_UTC seems out-of-date"`` excuses an error line sharing
  three of its six words (with the default threshold of 3).
* Case-insensitive means ASCII case folding on bytes: patterns and words are encoded
  as UTF-8, ``A``-``Z`` match ``a``-``z``, and every other byte (including each byte
  of a non-ASCII character) must match exactly. Words are distinct after that folding.
* Lines end at ``\\n``; a trailing ``\\r`` is not part of the line. Bytes that are not
  UTF-8 are compared as they are; NUL bytes are ordinary bytes.
* Files are streamed in fixed chunks with constant memory whatever their size or the
  length of their lines (a 100 MB progress bar with no newline is searched in full,
  but only its first :data:`MAX_LINE_TEXT` bytes are kept for reporting).

Choices the SPEC leaves open
----------------------------
* Patterns must be non-empty and may not contain ``\\n`` or ``\\r`` (they could never
  match inside a line); a whitelist entry must contain at least one word (an empty
  entry would excuse everything).
* ``ScanResult.patterns`` gives, per reported line, the first pattern *in the order
  of* ``error_patterns`` that the line contains.
* A file is read up to the size it had when it was opened; what is appended later is
  left for the next incremental scan.
* A file that is now shorter than ``offset`` was truncated or rotated: it is scanned
  again from byte 0 and line 1.
* A path that does not exist, is not a regular file, or cannot be opened or read
  gives ``missing=True`` and nothing else.

Implementations
---------------
The compiled ``housekeeper._scan`` (Cython) is used when it is importable;
otherwise the pure-Python twin ``housekeeper._scan_py`` with the same rules is used
and one warning is logged on the ``housekeeper`` logger. ``HOUSEKEEPER_PURE_PYTHON=1``
in the environment forces the twin. :data:`COMPILED` and :data:`IMPLEMENTATION` say
which one is in use.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from types import ModuleType

import msgspec

from .errors import InvalidArgumentError

__all__ = [
    "COMPILED",
    "DEFAULT_ERROR_PATTERNS",
    "IMPLEMENTATION",
    "MAX_LINE_TEXT",
    "ScanResult",
    "excusing_entry",
    "is_error_line",
    "scan_file",
]

logger = logging.getLogger("housekeeper")

DEFAULT_ERROR_PATTERNS: tuple[str, ...] = (
    "error",
    "exception",
    "traceback",
    "fatal",
    "segmentation fault",
    "core dumped",
    "killed",
    "out of memory",
    "oom-kill",
    "abort",
    "panic",
)

#: At most this many bytes of a reported line are kept (then decoded as UTF-8).
MAX_LINE_TEXT = 1000

#: Bytes read at a time; memory use is a small multiple of this, whatever the file.
CHUNK_SIZE = 1 << 20


def _load_implementation() -> tuple[ModuleType, bool]:
    if os.environ.get("HOUSEKEEPER_PURE_PYTHON", "").strip() not in ("", "0"):
        from . import _scan_py

        return _scan_py, False
    try:
        from . import _scan  # type: ignore[attr-defined]
    except ImportError as exc:
        from . import _scan_py

        logger.warning(
            "housekeeper: the compiled log scanner is not available (%s); "
            "using the pure-Python one, which is much slower",
            exc,
        )
        return _scan_py, False
    return _scan, True


_impl, COMPILED = _load_implementation()
#: ``"cython"`` or ``"python"``: which scanner :func:`scan_file` uses.
IMPLEMENTATION = "cython" if COMPILED else "python"


class ScanResult(msgspec.Struct, kw_only=True):
    """What :func:`scan_file` found.

    ``errors`` counts error lines, ``excused`` those of them the whitelist excuses.
    ``lines`` holds the first ``max_lines`` unexcused error lines as
    ``(line_number, text)`` and ``patterns`` the first error pattern each contains.
    A later call with ``offset=end_offset, first_line=end_line`` continues the scan.
    """

    errors: int = 0
    excused: int = 0
    lines: list[tuple[int, str]] = msgspec.field(default_factory=list)
    patterns: list[str] = msgspec.field(default_factory=list)
    end_offset: int = 0
    end_line: int = 1
    missing: bool = False

    @property
    def unexcused(self) -> int:
        """Error lines the whitelist does not excuse: a job with any of these failed."""
        return self.errors - self.excused


# ---- argument normalisation ------------------------------------------------------


def _as_bytes(value: str | bytes, parameter: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentError(parameter, value, "must be a str")


def _normalise_patterns(error_patterns: Iterable[str] | None) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    if error_patterns is None:
        originals: tuple[str, ...] = DEFAULT_ERROR_PATTERNS
    elif isinstance(error_patterns, (str, bytes)):
        raise InvalidArgumentError(
            "error_patterns", error_patterns, "must be a list of patterns, not a single string"
        )
    else:
        originals = tuple(error_patterns)
    folded = []
    for pattern in originals:
        if not isinstance(pattern, str):
            raise InvalidArgumentError("error_patterns", pattern, "each pattern must be a str")
        raw = _as_bytes(pattern, "error_patterns")
        if not raw:
            raise InvalidArgumentError("error_patterns", pattern, "a pattern must not be empty")
        if b"\n" in raw or b"\r" in raw:
            raise InvalidArgumentError(
                "error_patterns", pattern, "a pattern must not contain a line break"
            )
        folded.append(raw.lower())  # bytes.lower() folds ASCII only, as the rules say
    return originals, tuple(folded)


def _normalise_whitelist(
    error_whitelist: Iterable[str] | None, whitelist_threshold: int
) -> tuple[tuple[str, ...], tuple[tuple[bytes, ...], ...], tuple[int, ...]]:
    if isinstance(whitelist_threshold, bool) or not isinstance(whitelist_threshold, int):
        raise InvalidArgumentError("whitelist_threshold", whitelist_threshold, "must be an int")
    if whitelist_threshold < 1:
        raise InvalidArgumentError("whitelist_threshold", whitelist_threshold, "must be at least 1")
    if error_whitelist is None:
        return (), (), ()
    if isinstance(error_whitelist, (str, bytes)):
        raise InvalidArgumentError(
            "error_whitelist", error_whitelist, "must be a list of entries, not a single string"
        )
    originals = tuple(error_whitelist)
    entries = []
    needed = []
    for entry in originals:
        if not isinstance(entry, str):
            raise InvalidArgumentError("error_whitelist", entry, "each entry must be a str")
        words = tuple(dict.fromkeys(_as_bytes(w, "error_whitelist").lower() for w in entry.split()))
        if not words:
            raise InvalidArgumentError(
                "error_whitelist", entry, "an entry needs at least one word (it would excuse everything)"
            )
        entries.append(words)
        needed.append(min(whitelist_threshold, len(words)))
    return originals, tuple(entries), tuple(needed)


def _check_count(parameter: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(parameter, value, "must be an int")
    if value < minimum:
        raise InvalidArgumentError(parameter, value, f"must be at least {minimum}")
    return value


# ---- scanning ----------------------------------------------------------------------


def scan_file(
    path: str | os.PathLike[str],
    *,
    error_patterns: Iterable[str] | None = None,
    error_whitelist: Iterable[str] | None = None,
    whitelist_threshold: int = 3,
    offset: int = 0,
    first_line: int = 1,
    complete: bool = True,
    max_lines: int = 20,
) -> ScanResult:
    """Scan the log at ``path`` for error lines, from byte ``offset`` on.

    ``offset`` must be the start of a line, numbered ``first_line``. With
    ``complete=True`` the file is finished and an unterminated last line counts; with
    ``complete=False`` (still being written) it is left for the next call, and
    ``end_offset`` stops at its start. A file now shorter than ``offset`` (truncated or
    rotated) is scanned again from the beginning. See the module docstring for the rules.
    """
    return _scan_file(
        _impl,
        path,
        error_patterns=error_patterns,
        error_whitelist=error_whitelist,
        whitelist_threshold=whitelist_threshold,
        offset=offset,
        first_line=first_line,
        complete=complete,
        max_lines=max_lines,
    )


def _scan_file(
    impl: ModuleType,
    path: str | os.PathLike[str],
    *,
    error_patterns: Iterable[str] | None = None,
    error_whitelist: Iterable[str] | None = None,
    whitelist_threshold: int = 3,
    offset: int = 0,
    first_line: int = 1,
    complete: bool = True,
    max_lines: int = 20,
    chunk_size: int = CHUNK_SIZE,
    max_text: int = MAX_LINE_TEXT,
) -> ScanResult:
    """:func:`scan_file` with a chosen implementation module (tests run both)."""
    originals, patterns = _normalise_patterns(error_patterns)
    _, whitelist, needed = _normalise_whitelist(error_whitelist, whitelist_threshold)
    _check_count("offset", offset, 0)
    _check_count("first_line", first_line, 1)
    _check_count("max_lines", max_lines, 0)
    _check_count("chunk_size", chunk_size, 1)
    _check_count("max_text", max_text, 0)
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return ScanResult(end_offset=offset, end_line=first_line, missing=True)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ScanResult(end_offset=offset, end_line=first_line, missing=True)
        if info.st_size < offset:  # truncated or rotated: start again
            offset, first_line = 0, 1
        try:
            errors, excused, lines, indices, end_offset, end_line = impl.scan_fd(
                fd, offset, info.st_size, first_line, patterns, whitelist, needed,
                bool(complete), max_lines, max_text, chunk_size,
            )
        except OSError:
            return ScanResult(end_offset=offset, end_line=first_line, missing=True)
    finally:
        os.close(fd)
    return ScanResult(
        errors=errors,
        excused=excused,
        lines=[
            (number, text.decode("utf-8", "replace")[:max_text]) for number, text in lines
        ],
        patterns=[originals[i] for i in indices],
        end_offset=end_offset,
        end_line=end_line,
    )


# ---- single lines (for explanations) ------------------------------------------------


def _line_bytes(line: str | bytes) -> bytes:
    raw = _as_bytes(line, "line")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.lower()


def is_error_line(line: str | bytes, error_patterns: Iterable[str] | None = None) -> str | None:
    """The first of ``error_patterns`` (default: the built-in ones) that ``line`` contains."""
    originals, patterns = _normalise_patterns(error_patterns)
    folded = _line_bytes(line)
    for original, pattern in zip(originals, patterns):
        if pattern in folded:
            return original
    return None


def excusing_entry(
    line: str | bytes,
    error_whitelist: Iterable[str] | None,
    whitelist_threshold: int = 3,
) -> str | None:
    """The first whitelist entry that excuses ``line`` (were it an error line), or None."""
    originals, entries, needed = _normalise_whitelist(error_whitelist, whitelist_threshold)
    folded = _line_bytes(line)
    for original, words, need in zip(originals, entries, needed):
        if sum(word in folded for word in words) >= need:
            return original
    return None
