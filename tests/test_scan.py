"""The log scanner (SPEC §5): every test runs against the compiled module and the twin."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from housekeeper import _scan_py, scan
from housekeeper.errors import InvalidArgumentError
from housekeeper.scan import DEFAULT_ERROR_PATTERNS, ScanResult, excusing_entry, is_error_line

try:
    from housekeeper import _scan as _scan_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - reported by test_compiled_module_is_loaded
    _scan_c = None

IMPLEMENTATIONS = {"cython": _scan_c, "python": _scan_py}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def scan_file(request):
    """``scan_file`` bound to one implementation (with the test-only chunk_size/max_text)."""
    module = IMPLEMENTATIONS[request.param]
    if module is None:
        pytest.fail("the compiled scanner housekeeper._scan is not built")
    return functools.partial(scan._scan_file, module)


def write(tmp_path: Path, data: bytes, name: str = "stdout.log") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---- which implementation is loaded -------------------------------------------------


def _python(code: str, **env_changes: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, check=True
    )


def test_compiled_module_is_loaded():
    out = _python(
        "from housekeeper import scan; print(scan.COMPILED, scan.IMPLEMENTATION, scan._impl.__name__)",
        HOUSEKEEPER_PURE_PYTHON=None,
    ).stdout.split()
    assert out == ["True", "cython", "housekeeper._scan"]


def test_environment_switch_forces_the_python_twin():
    out = _python(
        "from housekeeper import scan; print(scan.COMPILED, scan.IMPLEMENTATION)",
        HOUSEKEEPER_PURE_PYTHON="1",
    ).stdout.split()
    assert out == ["False", "python"]


def test_missing_extension_falls_back_with_one_warning():
    result = _python(
        """
        import logging, sys
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
        sys.modules["housekeeper._scan"] = None  # what an absent extension looks like
        from housekeeper import scan
        import housekeeper.scan
        print(scan.COMPILED, scan.IMPLEMENTATION)
        """,
        HOUSEKEEPER_PURE_PYTHON=None,
    )
    assert result.stdout.split() == ["False", "python"]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and warnings[0].startswith("housekeeper WARNING")
    assert "compiled log scanner" in warnings[0]


# ---- the rules on concrete cases --------------------------------------------------


def test_line_numbers_start_at_one_and_text_is_reported(scan_file, tmp_path):
    path = write(tmp_path, b"ok\nsome ERROR here\nok\nFatal: disk\n")
    result = scan_file(path)
    assert result == ScanResult(
        errors=2,
        excused=0,
        lines=[(2, "some ERROR here"), (4, "Fatal: disk")],
        patterns=["error", "fatal"],
        end_offset=path.stat().st_size,
        end_line=5,
    )


def test_crlf_line_endings(scan_file, tmp_path):
    path = write(tmp_path, b"fine\r\nerror one\r\n\r\nexception two\r\nlast error\r")
    result = scan_file(path)
    assert result.lines == [(2, "error one"), (4, "exception two"), (5, "last error")]
    assert result.end_line == 6


def test_carriage_return_inside_a_line_is_kept(scan_file, tmp_path):
    # progress bars redraw with \r; only a \r right before the \n is dropped
    path = write(tmp_path, b" 10%\r 50%\r100% error\r\r\n")
    assert scan_file(path).lines == [(1, " 10%\r 50%\r100% error\r")]


def test_nul_bytes_and_invalid_utf8(scan_file, tmp_path):
    path = write(tmp_path, b"\x00\x00bin\x00ERROR\xff\xfe\x00\n\x00\x00\x00\nok\xc3\xa9 fatal\n")
    result = scan_file(path)
    assert result.errors == 2
    assert result.lines == [(1, "\x00\x00bin\x00ERROR\ufffd\ufffd\x00"), (3, "oké fatal")]


def test_case_folding_is_ascii_only(scan_file, tmp_path):
    path = write(tmp_path, "DÉFAUT\ndéfaut\nDéFAUT\nerreur\n".encode())
    result = scan_file(path, error_patterns=["défaut"])
    # É (C3 89) and é (C3 A9) are different bytes: only ASCII letters fold
    assert [n for n, _ in result.lines] == [2, 3]
    assert scan_file(path, error_patterns=["ERREUR"]).lines == [(4, "erreur")]


def test_first_pattern_in_order_is_reported(scan_file, tmp_path):
    path = write(tmp_path, b"Segmentation fault (core dumped)\nMPI_ABORT ... errorcode 1\n")
    assert scan_file(path).patterns == ["segmentation fault", "error"]
    assert scan_file(path, error_patterns=["core dumped", "abort"]).patterns == ["core dumped", "abort"]


def test_empty_file(scan_file, tmp_path):
    path = write(tmp_path, b"")
    assert scan_file(path) == ScanResult(end_offset=0, end_line=1)
    assert scan_file(path, offset=0, first_line=7) == ScanResult(end_offset=0, end_line=7)


def test_missing_file_and_directory(scan_file, tmp_path):
    missing = scan_file(tmp_path / "nope.log", offset=10, first_line=3)
    assert missing == ScanResult(end_offset=10, end_line=3, missing=True)
    assert scan_file(tmp_path).missing  # a directory is not a log
    assert scan_file(tmp_path / "a\0b").missing


def test_unreadable_file(scan_file, tmp_path):
    """An unreadable log counts as missing. Root reads anything, so as root the scan runs in a
    forked child that first drops to `nobody` (it has the scanner loaded already)."""
    import pwd

    if os.geteuid() != 0:
        path = write(tmp_path, b"error\n")
        path.chmod(0)
        try:
            assert scan_file(path).missing
        finally:
            path.chmod(0o644)
        return
    nobody = pwd.getpwnam("nobody")
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:  # let nobody reach the folder (pytest's are 0700)
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    path = write(tmp_path, b"error\n")
    path.chmod(0)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, scan, report, and leave without cleanup
        try:
            os.close(reader)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            readable = os.access(path, os.R_OK)
            result = scan_file(path)
            os.write(writer, f"{readable} {result.missing} {result.errors}".encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer.split() == ["False", "True", "0"]


def test_max_lines_caps_the_report_not_the_count(scan_file, tmp_path):
    path = write(tmp_path, b"".join(b"error %d\n" % i for i in range(50)))
    result = scan_file(path, max_lines=3)
    assert result.errors == 50
    assert result.lines == [(1, "error 0"), (2, "error 1"), (3, "error 2")]
    assert scan_file(path).lines[-1] == (20, "error 19")
    assert scan_file(path, max_lines=0).lines == []


def test_reported_text_is_bounded(scan_file, tmp_path):
    path = write(tmp_path, b"x" * 5000 + b" error\n")
    result = scan_file(path)
    assert result.lines == [(1, "x" * scan.MAX_LINE_TEXT)]


def test_giant_line_without_newline_error_at_the_very_end(scan_file, tmp_path):
    # 20 MB of progress bar redrawn with \r and no newline, the error in its last bytes
    bar = b"".join(b"\r[%-50s] %3d%%" % (b"#" * (i % 51), i % 101) for i in range(300_000))
    data = bar[: 20_000_000 - 20] + b" Out Of Memory"
    path = write(tmp_path, data)
    result = scan_file(path, chunk_size=1 << 20)
    assert result.errors == 1
    assert result.patterns == ["out of memory"]
    assert result.lines == [(1, data[:1000].decode())]
    assert result.end_offset == len(data) and result.end_line == 2
    # still being written: the unterminated line is left for later
    unfinished = scan_file(path, complete=False)
    assert (unfinished.errors, unfinished.end_offset, unfinished.end_line) == (0, 0, 1)


def test_pattern_straddling_chunks_in_a_long_line(scan_file, tmp_path):
    for cut in range(1, 9):
        data = b"a" * (64 - cut) + b"oom-kill" + b"b" * 100 + b"\nnext\n"
        result = scan_file(write(tmp_path, data), chunk_size=64, error_patterns=["oom-kill"])
        assert result.errors == 1, cut


def test_incremental_scanning_across_appends(scan_file, tmp_path):
    path = write(tmp_path, b"start\nerror A\npartial err")
    first = scan_file(path, complete=False)
    assert (first.errors, first.lines, first.end_line) == (1, [(2, "error A")], 3)
    assert first.end_offset == len(b"start\nerror A\n")
    with open(path, "ab") as f:
        f.write(b"or B\nok\nfatal C\n")
    second = scan_file(path, offset=first.end_offset, first_line=first.end_line, complete=False)
    assert second.lines == [(3, "partial error B"), (5, "fatal C")]
    assert (second.end_offset, second.end_line) == (path.stat().st_size, 6)
    third = scan_file(path, offset=second.end_offset, first_line=second.end_line)
    assert third == ScanResult(end_offset=second.end_offset, end_line=6)


def test_truncated_file_is_rescanned_from_the_start(scan_file, tmp_path):
    path = write(tmp_path, b"ok\n" * 100 + b"error old\n")
    before = scan_file(path)
    path.write_bytes(b"panic new\n")  # rotated: shorter than where we were
    after = scan_file(path, offset=before.end_offset, first_line=before.end_line)
    assert after.lines == [(1, "panic new")]
    assert (after.end_offset, after.end_line) == (10, 2)


# ---- the whitelist ------------------------------------------------------------------


def test_whitelist_single_word_excuses_any_line_containing_it(scan_file, tmp_path):
    path = write(tmp_path, b"WARNING: error in config\nerror: real\nwarn error\n")
    result = scan_file(path, error_whitelist=["WARN"])
    assert (result.errors, result.excused, result.lines) == (3, 2, [(2, "error: real")])


LEAP = "Leap second table TAI_UTC seems out-of-date"


@pytest.mark.parametrize(
    ("line", "threshold", "excused"),
    [
        ("ERROR: leap SECOND table", 3, True),  # three of the six words
        ("ERROR: leap second", 3, False),  # only two
        ("ERROR: leap second", 2, True),
        ("error: tai_utc", 1, True),
        ("error: Leap second table TAI_UTC seems out-of-date", 6, True),
        ("error: Leap second table TAI_UTC seems", 6, False),
        ("error: Leap second table TAI_UTC seems out-of-date", 100, True),  # min(100, 6 words)
        ("error: leapsecondtable", 3, True),  # substrings, not whole words
    ],
)
def test_whitelist_threshold(scan_file, tmp_path, line, threshold, excused):
    path = write(tmp_path, line.encode() + b"\n")
    result = scan_file(path, error_whitelist=[LEAP], whitelist_threshold=threshold)
    assert (result.errors, result.excused) == (1, int(excused))
    assert excusing_entry(line, [LEAP], threshold) == (LEAP if excused else None)


def test_whitelist_words_are_distinct(scan_file, tmp_path):
    # "0 errors, 0 warnings" has three distinct words: 0, errors, and warnings
    path = write(tmp_path, b"Build: 0 errors, 0 warnings\nBuild: 2 errors, 3 warnings\n")
    result = scan_file(path, error_whitelist=["0 errors, 0 warnings"])
    assert (result.errors, result.excused, result.lines) == (2, 1, [(2, "Build: 2 errors, 3 warnings")])
    # duplicates after case folding collapse too: one word, so one hit is enough
    assert scan_file(path, error_whitelist=["WARNINGS warnings Warnings"]).excused == 2


def test_whitelist_words_straddling_chunks(scan_file, tmp_path):
    data = b"x" * 60 + b"error " + b"y" * 70 + b" leap second table\n"
    result = scan_file(write(tmp_path, data), error_whitelist=[LEAP], chunk_size=16)
    assert (result.errors, result.excused) == (1, 1)


# ---- real-world lines -----------------------------------------------------------------

REAL_WHITELIST = [
    "0 errors, 0 warnings",
    LEAP,
    "DeprecationWarning",
    "FutureWarning",
    "NCCL INFO",
    "OpenFabrics device",
]

# (line, first default pattern it contains or None, the REAL_WHITELIST entry excusing it or None)
REAL_LINES = [
    # warnings and noise
    (("/opt/conda/lib/python3.11/site-packages/pandas/core/tools/datetimes.py:1047: FutureWarning: "
     "errors='ignore' is deprecated and will raise in a future version."), "error", "FutureWarning"),
    (("/work/run.py:12: DeprecationWarning: datetime.datetime.utcnow() is deprecated and scheduled "
     "for removal in a future version."), None, None),
    ("/work/lib/io.py:88: DeprecationWarning: Exception chaining via __context__ will change",
     "exception", "DeprecationWarning"),
    ("WARNING: Leap second table TAI_UTC seems out-of-date [astropy.utils.iers.iers]", None, None),
    ("ERROR: Leap second table TAI_UTC seems out-of-date; could not download a newer one",
     "error", LEAP),
    (("gpu01:12345:12345 [0] NCCL INFO NET/Plugin: No plugin found (libnccl-net.so), using internal "
     "implementation"), None, None),
    ("gpu01:12345:12399 [0] NCCL INFO NET/IB : No device found. Error ignored, using NET/Socket",
     "error", "NCCL INFO"),
    (("[node02:31337] mca_base_component_repository_open: unable to open mca_btl_openib: "
     "librdmacm.so.1: cannot open shared object file: No such file or directory (ignored)"), None, None),
    ("WARNING: There was an error initializing an OpenFabrics device.", "error", "OpenFabrics device"),
    ("Build finished: 0 errors, 0 warnings", "error", "0 errors, 0 warnings"),
    ("nvcc: 0 errors, 0 warnings generated.", "error", "0 errors, 0 warnings"),
    # failures
    ("Traceback (most recent call last):", "traceback", None),
    ("ValueError: could not convert string to float: 'abc'", "error", None),
    ("Segmentation fault (core dumped)", "segmentation fault", None),
    ("Aborted (core dumped)", "core dumped", None),
    ("MPI_ABORT was invoked on rank 3 in communicator MPI_COMM_WORLD with errorcode 1.", "error", None),
    ("slurmstepd: error: *** JOB 123 ON node1 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT ***",
     "error", None),
    (("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=123.batch. Some of your processes "
     "may have been killed by the cgroup out-of-memory handler."), "error", None),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "error", None),
    ("/var/spool/slurmd/job123/slurm_script: line 5: 4242 Killed   python train.py", "killed", None),
    ("thread 'main' panicked at src/main.rs:2:5: index out of bounds", "panic", None),
    ("FATAL: could not open file '/scratch/run/input.h5'", "fatal", None),
]


@pytest.mark.parametrize(("line", "pattern", "entry"), REAL_LINES, ids=[text[:40] for text, _, _ in REAL_LINES])
def test_real_world_line_verdicts(scan_file, tmp_path, line, pattern, entry):
    assert is_error_line(line) == pattern
    if pattern is not None:
        assert excusing_entry(line, REAL_WHITELIST) == entry
    result = scan_file(write(tmp_path, line.encode() + b"\n"), error_whitelist=REAL_WHITELIST)
    assert result.errors == (pattern is not None)
    assert result.excused == (entry is not None and pattern is not None)
    assert result.patterns == ([pattern] if pattern and not entry else [])
    # without the whitelist every line with a pattern is an error line, "0 errors" included
    assert scan_file(write(tmp_path, line.encode() + b"\n")).patterns == ([pattern] if pattern else [])


def test_whitelist_entries_made_of_common_words_excuse_too_much():
    # The rule counts words as substrings: "was", "an" and "error" all occur in this real
    # failure, so a whitelist entry copied verbatim from OpenMPI's warning excuses it.
    # Distinctive words ("OpenFabrics device") are the remedy.
    line = "MPI_ABORT was invoked on rank 3 in communicator MPI_COMM_WORLD with errorcode 1."
    verbatim = "WARNING: There was an error initializing an OpenFabrics device"
    assert excusing_entry(line, [verbatim]) == verbatim
    assert excusing_entry(line, ["OpenFabrics device"]) is None


def test_real_world_log(scan_file, tmp_path):
    path = write(tmp_path, "\n".join(line for line, _, _ in REAL_LINES).encode() + b"\n")
    result = scan_file(path, error_whitelist=REAL_WHITELIST)
    failures = [(i, line) for i, (line, pattern, entry) in enumerate(REAL_LINES, 1) if pattern and not entry]
    assert result.errors == sum(p is not None for _, p, _ in REAL_LINES)
    assert result.excused == sum(p is not None and e is not None for _, p, e in REAL_LINES)
    assert result.lines == failures


# ---- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"whitelist_threshold": 0}, "whitelist_threshold"),
        ({"whitelist_threshold": 2.5}, "whitelist_threshold"),
        ({"error_patterns": ["error", ""]}, "error_patterns"),
        ({"error_patterns": "error"}, "error_patterns"),
        ({"error_patterns": ["bad\nline"]}, "error_patterns"),
        ({"error_patterns": [b"error"]}, "error_patterns"),
        ({"error_whitelist": [123]}, "error_whitelist"),
        ({"error_whitelist": ["   "]}, "error_whitelist"),
        ({"error_whitelist": "WARN"}, "error_whitelist"),
        ({"offset": -1}, "offset"),
        ({"first_line": 0}, "first_line"),
        ({"max_lines": -1}, "max_lines"),
    ],
)
def test_bad_arguments_name_the_parameter(scan_file, tmp_path, kwargs, parameter):
    with pytest.raises(InvalidArgumentError) as info:
        scan_file(write(tmp_path, b"error\n"), **kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}=")


def test_line_helpers():
    assert is_error_line("all good") is None
    assert is_error_line(b"KILLED by signal 9\r\n") == "killed"
    assert is_error_line("disk full", ["Disk Full"]) == "Disk Full"
    assert excusing_entry("error: WARN", ["foo", "warn"]) == "warn"
    assert excusing_entry("error", ["warn"]) is None
    assert excusing_entry("error", None) is None
    with pytest.raises(InvalidArgumentError):
        excusing_entry("error", ["warn"], 0)
    assert DEFAULT_ERROR_PATTERNS[0] == "error" and len(DEFAULT_ERROR_PATTERNS) == 11


# ---- the two implementations agree, with each other and with a plain oracle ---------


def oracle(data: bytes, patterns, whitelist, threshold, complete, max_lines, max_text, first_line=1):
    """The rules of SPEC §5, written as plainly as possible."""
    folded_patterns = [p.encode().lower() for p in patterns]
    entries = [list(dict.fromkeys(w.encode().lower() for w in e.split())) for e in whitelist]
    lines = data.split(b"\n")
    unterminated = lines.pop()
    if unterminated and complete:
        lines.append(unterminated)
    errors = excused = 0
    reported, hits = [], []
    for number, line in enumerate(lines, first_line):
        if line.endswith(b"\r"):
            line = line[:-1]
        folded = line.lower()
        pattern = next((p for p, f in zip(patterns, folded_patterns) if f in folded), None)
        if pattern is None:
            continue
        errors += 1
        if any(sum(w in folded for w in words) >= min(threshold, len(words)) for words in entries):
            excused += 1
        elif len(reported) < max_lines:
            reported.append((number, line[:max_text].decode("utf-8", "replace")))
            hits.append(pattern)
    end = len(data) - (0 if complete else len(unterminated))
    return ScanResult(errors=errors, excused=excused, lines=reported, patterns=hits,
                      end_offset=end, end_line=first_line + len(lines))


TOKENS = [b"error", b"ERR", b"or", b"Fatal", b"oom-kill", b"\r\n", b"\n", b"\n", b"\r", b"\x00",
          b"\xc3\xa9", b"\xc3", b"\xe2\x82\xac", b"\xff", b" ", b"warn", b"leap", b"x", b"abc",
          b"SEGMENTATION FAULT", b"panic", b"e", b"r"]
logs = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=80).map(b"".join)
pattern_lists = st.one_of(
    st.just(list(DEFAULT_ERROR_PATTERNS)),
    st.lists(st.text(alphabet="abcerorERORxé-€ \x00", min_size=1, max_size=7), max_size=5),
)
whitelists = st.lists(
    st.text(alphabet="abc erorwanWARNé\x00-", min_size=1, max_size=14).filter(lambda e: e.split()),
    max_size=4,
)

SETTINGS = settings(max_examples=int(os.environ.get("HOUSEKEEPER_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(data=logs, patterns=pattern_lists, whitelist=whitelists, threshold=st.integers(1, 4),
       complete=st.booleans(), max_lines=st.integers(0, 6), max_text=st.integers(0, 24),
       chunk_size=st.one_of(st.integers(1, 64), st.sampled_from([4096, 1 << 20])))
@example(data=b"ab\nerror\r\n", patterns=["error"], whitelist=[], threshold=3, complete=True,
         max_lines=5, max_text=10, chunk_size=1)
def test_implementations_agree_with_the_oracle(tmp_path, data, patterns, whitelist, threshold,
                                               complete, max_lines, max_text, chunk_size):
    if _scan_c is None:
        pytest.fail("the compiled scanner housekeeper._scan is not built")
    path = write(tmp_path, data)
    kwargs = {"error_patterns": patterns, "error_whitelist": whitelist, "whitelist_threshold": threshold,
                  "complete": complete, "max_lines": max_lines, "max_text": max_text, "chunk_size": chunk_size}
    compiled = scan._scan_file(_scan_c, path, **kwargs)
    python = scan._scan_file(_scan_py, path, **kwargs)
    assert compiled == python
    assert compiled == oracle(data, patterns, whitelist, threshold, complete, max_lines, max_text)


@SETTINGS
@given(lines=st.lists(st.one_of(st.sampled_from([b"ok", b"x" * 40, b"an Error", b"warn error", b""]),
                                st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))),
                      max_size=400),
       chunk_size=st.integers(1, 300), split=st.integers(0, 400))
def test_incremental_scans_add_up(tmp_path, lines, chunk_size, split):
    """Scanning a growing file in two steps finds what one scan of the whole finds."""
    data = b"\n".join(lines)
    path = write(tmp_path, data[: split * 7])
    for module in filter(None, (_scan_c, _scan_py)):
        run = functools.partial(scan._scan_file, module, error_whitelist=["WARN"], chunk_size=chunk_size,
                                max_lines=1000)
        path.write_bytes(data[: split * 7])
        first = run(path, complete=False)
        path.write_bytes(data)
        second = run(path, offset=first.end_offset, first_line=first.end_line)
        whole = run(path)
        assert first.errors + second.errors == whole.errors
        assert first.excused + second.excused == whole.excused
        assert first.lines + second.lines == whole.lines
        assert (second.end_offset, second.end_line) == (whole.end_offset, whole.end_line)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.integers(0, 5000), where=st.sampled_from(["start", "middle", "end"]),
       chunk_size=st.sampled_from([1000, 4096, 65536]))
def test_long_lines_agree(tmp_path, prefix, where, chunk_size):
    """Lines longer than a chunk, with the error anywhere, in both implementations."""
    if _scan_c is None:
        pytest.fail("the compiled scanner housekeeper._scan is not built")
    filler = (b"\r[#####     ] 50% \xe2\x82\xac" * 400)[: prefix * 3]
    body = {"start": b"ERROR " + filler, "middle": filler + b" Error " + filler, "end": filler + b" eRRoR"}
    data = b"head\n" + body[where] + b"\r\nok\n" + filler + b"\nwarn fatal " + filler
    path = write(tmp_path, data)
    results = [scan._scan_file(m, path, error_whitelist=["WARN"], chunk_size=chunk_size, max_text=50)
               for m in (_scan_c, _scan_py)]
    assert results[0] == results[1]
    assert results[0] == oracle(data, DEFAULT_ERROR_PATTERNS, ["WARN"], 3, True, 20, 50)
