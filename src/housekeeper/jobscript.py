"""The job folder layout and the batch scripts housekeeper writes.

Every job gets `<jobs_dir>/<job_subdir>/<name>.sh`: a script readable and re-runnable by hand
(`bash it` or `sbatch it`). It cds to the job's working directory, appends the command's
output to `stdout.log`/`stderr.log` in the job folder, runs the command, and then runs the
finisher (`python -m housekeeper._finish`), which checks the logs and expected files and
writes the exit record `status.json`; the script exits non-zero when the verdict is failure,
so the scheduler (and its native dependencies) see the same verdict as housekeeper.

Jobs sent together as an array share one small wrapper script that picks its job's script
from a fixed-width manifest by the task index.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

HK_DIR = ".housekeeper"
STATUS_FILE = "status.json"
RUNNING_FILE = "running.json"  # written when the job starts: its scheduler ids, host, start time
STDOUT = "stdout.log"
STDERR = "stderr.log"
# Files opened for appending or with '>' in a job folder, by the scheduler (--output), the
# local supervisor or the job script: a symbolic link there would be written through.
OPENED_FILES = (STDOUT, STDERR, ".running.json.tmp", ".status.json.tmp")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_dir(jobs_dir: str, job_subdir: str) -> str:
    return os.path.join(jobs_dir, job_subdir)


def script_path(jobs_dir: str, job_subdir: str, name: str) -> str:
    return os.path.join(jobs_dir, job_subdir, f"{name}.sh")


def attempt_file(folder: str, filename: str, attempt: int) -> str:
    """Where attempt N's copy of a per-attempt file lives once a newer attempt took its place."""
    stem, dot, ext = filename.rpartition(".")
    return os.path.join(folder, f"{stem}.{attempt}.{ext}" if dot else f"{filename}.{attempt}")


def rotate_attempt_files(folder: str, finished_attempt: int) -> None:
    """Keep attempt N's logs and exit record beside the folder as `stdout.N.log` etc."""
    for filename in (STDOUT, STDERR, STATUS_FILE, RUNNING_FILE):
        current = os.path.join(folder, filename)
        target = attempt_file(folder, filename, finished_attempt)
        if os.path.lexists(current) and not os.path.exists(target):
            os.replace(current, target)


def render_job_header(
    *,
    job_id: int,
    attempt: int,
    name: str,
    command: str,
    folder: str,
    workdir: str,
    env: dict[str, str],
    expected_files: Sequence[str],
    directives: Sequence[str] = (),
) -> str:
    """The lines of a job's script that are its own: directives, ids, folder, working
    directory, command, environment and expected files, as shell variables the body uses."""
    q = shlex.quote
    exports = "".join(f"export {key}={q(value)}\n" for key, value in env.items())
    return "".join((
        "#!/bin/bash\n",
        "".join(f"{line}\n" for line in directives),
        f"# housekeeper job {job_id} ({name}), attempt {attempt}.\n"
        "# Runs HK_COMMAND in HK_WORKDIR with the environment hk_env sets, appends its output to\n"
        "# stdout.log and stderr.log in HK_JOB_DIR, then writes the verdict to status.json there.\n"
        "# Re-run by hand: bash this file.\n",
        f"HK_JOB_ID={job_id}\nHK_ATTEMPT={attempt}\nHK_JOB_DIR={q(folder)}\nHK_WORKDIR={q(workdir)}\n",
        f"HK_COMMAND={q(command)}\n",
        f"HK_EXPECTED=({' '.join(q(f) for f in expected_files)})\n",
        f"hk_env() {{\n{exports}:\n}}\n",
    ))  # fmt: skip


@functools.lru_cache(maxsize=8)
def job_script_body(python: str, rules_path: str, file_grace: float) -> str:
    """The part of a job's script that is the same for every job of a run (it reads the
    header's variables): a million-job array stores it once."""
    q = shlex.quote
    patterns = rules_patterns_path(rules_path)
    lines = [
        "# ---- the same for every job of this run ----",
        f"HK_PYTHON={q(python)}",
        "export HK_JOB_ID HK_ATTEMPT HK_JOB_DIR",
        "umask o-w",  # nothing this job's script makes is world-writable, whatever the umask
        '[ -d "$HK_JOB_DIR" ] || mkdir -p "$HK_JOB_DIR"',
        # Started as an array task (see render_array_script): keep the previous attempt's files.
        'if [ -n "${HK_ROTATE:-}" ] && [ "$HK_ATTEMPT" -gt 1 ]; then',
        "  for hk_f in stdout.log stderr.log status.json running.json; do",
        '    hk_old="$HK_JOB_DIR/${hk_f%.*}.$((HK_ATTEMPT - 1)).${hk_f##*.}"',
        '    if [ -e "$HK_JOB_DIR/$hk_f" ] && [ ! -e "$hk_old" ]; then mv -f "$HK_JOB_DIR/$hk_f" "$hk_old"; fi',
        "  done",
        "fi",
        "unset HK_ROTATE",
        # Started again by the scheduler after it lost a run of this attempt (SLURM requeues a
        # job after a node failure or a launch that failed under load): what the lost run left
        # is kept as stdout.<attempt>.requeue<N>.log etc., and this run starts clean.
        'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] 2>/dev/null && [ -e "$HK_JOB_DIR/running.json" ]; then',
        "  for hk_f in stdout.log stderr.log status.json running.json; do",
        '    hk_old="$HK_JOB_DIR/${hk_f%.*}.$HK_ATTEMPT.requeue$SLURM_RESTART_COUNT.${hk_f##*.}"',
        '    if [ -e "$HK_JOB_DIR/$hk_f" ]; then mv -f "$HK_JOB_DIR/$hk_f" "$hk_old"; fi',
        "  done",
        "fi",
        # A log (or a temporary the script writes with '>') planted as a symbolic link would
        # take this job's output outside jobs_dir: the link goes, never what it points to.
        f"for hk_f in {' '.join(OPENED_FILES)}; do",
        '  if [ -L "$HK_JOB_DIR/$hk_f" ]; then rm -f -- "$HK_JOB_DIR/$hk_f"; fi',
        "done",
        'exec >>"$HK_JOB_DIR/stdout.log" 2>>"$HK_JOB_DIR/stderr.log"',
        'cd "$HK_WORKDIR" || { echo "housekeeper: cannot cd to $HK_WORKDIR" >&2; exit 1; }',
        "hk_env",
        # bash 5 keeps the time (EPOCHREALTIME) and host (HOSTNAME) itself: no process each.
        'hk_started=${EPOCHREALTIME:-$(date +%s.%N)}; hk_started=${hk_started/,/.}',
        'hk_host=${HOSTNAME:-$(hostname)}',
        # What the scheduler calls this run of the job (array tasks under SLURM: base_index).
        'hk_sid=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
        'hk_sid=${hk_sid:-${SLURM_JOB_ID:-${PBS_JOBID:-${HK_LOCAL_ID:-}}}}',
        "printf '{\"job_id\":%s,\"attempt\":%s,\"scheduler_id\":\"%s\",\"raw_id\":\"%s\","
        "\"host\":\"%s\",\"started_at\":%s}\\n' \\",
        '  "$HK_JOB_ID" "$HK_ATTEMPT" "$hk_sid" "${SLURM_JOB_ID:-${PBS_JOBID:-}}" "$hk_host" "$hk_started" \\',
        '  > "$HK_JOB_DIR/.running.json.tmp" && mv -f "$HK_JOB_DIR/.running.json.tmp" "$HK_JOB_DIR/running.json"',
        "hk_term=0",
        # The scheduler signals the whole job at its time limit or on cancel: note it and let
        # the finisher record what happened (bash runs the trap once the command has ended).
        "trap 'hk_term=15' TERM",
        "trap 'hk_term=2' INT",
        '/bin/bash -c -- "$HK_COMMAND"',  # '--': a command starting with '-' is not bash's options
        "hk_rc=$?",
        "trap - TERM INT",
        # The common case needs no Python: the command exited 0 of itself, every expected file
        # is there, and no log line holds an error pattern (grep -F -i in the C locale finds
        # what the scanner finds before its whitelist). Anything else goes to the finisher.
        'hk_ended=${EPOCHREALTIME:-$(date +%s.%N)}; hk_ended=${hk_ended/,/.}',
        "hk_clean=0",
        f'if [ "$hk_rc" = 0 ] && [ "$hk_term" = 0 ] && [ -r {q(patterns)} ] && [[ $hk_sid$hk_host != *[\\\\\\"]* ]]; then',
        "  hk_clean=1",
        '  for hk_f in "${HK_EXPECTED[@]}"; do [ -e "$hk_f" ] || { hk_clean=0; break; }; done',
        '  if [ "$hk_clean" = 1 ] && { [ -s "$HK_JOB_DIR/stdout.log" ] || [ -s "$HK_JOB_DIR/stderr.log" ]; }; then',
        f'    LC_ALL=C grep -a -q -i -F -f {q(patterns)} -- "$HK_JOB_DIR/stdout.log" "$HK_JOB_DIR/stderr.log"',
        '    [ "$?" = 1 ] || hk_clean=0',  # 0: an error line; 2: unreadable
        "  fi",
        "fi",
        'if [ "$hk_clean" = 1 ]; then',
        "  hk_restarts=${SLURM_RESTART_COUNT:-0}; [[ $hk_restarts =~ ^[0-9]+$ ]] || hk_restarts=0",
        '  hk_sid_json=null; [ -n "$hk_sid" ] && hk_sid_json="\\"$hk_sid\\""',
        '  printf \'{"job_id":%s,"attempt":%s,"exit_code":0,"signal":null,"scheduler_id":%s,"host":"%s",\'\\',
        '\'"started_at":%s,"ended_at":%s,"checked":true,"terminated":0,"restarts":%s,"ok":true}\\n\' \\',
        '    "$HK_JOB_ID" "$HK_ATTEMPT" "$hk_sid_json" "$hk_host" "$hk_started" "$hk_ended" \\',
        '    "$hk_restarts" > "$HK_JOB_DIR/.status.json.tmp" && mv -f "$HK_JOB_DIR/.status.json.tmp" "$HK_JOB_DIR/status.json" \\',
        "    && exit 0",
        "fi",
        # HK_FILE_GRACE: how long the finisher waits for expected files that are late to show
        # up (NFS/Lustre lag), the driver's file_grace.
        f'HK_FILE_GRACE={file_grace:g} PYTHONPATH={q(PACKAGE_PARENT)}${{PYTHONPATH:+:$PYTHONPATH}} \\',
        '  "$HK_PYTHON" -m housekeeper._finish \\',
        f'  "$HK_JOB_DIR" "$HK_JOB_ID" "$HK_ATTEMPT" "$hk_rc" "$hk_started" "$hk_term" {q(rules_path)} -- \\',
        '  "${HK_EXPECTED[@]}"',
        "hk_verdict=$?",
        'if [ ! -s "$HK_JOB_DIR/status.json" ]; then',
        "  # No Python for the finisher here: leave a bare exit record; the driver checks the rest.",
        "  printf '{\"job_id\":%s,\"attempt\":%s,\"exit_code\":%s,\"checked\":false,\"started_at\":%s}\\n' \\",
        '    "$HK_JOB_ID" "$HK_ATTEMPT" "$hk_rc" "$hk_started" > "$HK_JOB_DIR/.status.json.tmp" \\',
        '    && mv -f "$HK_JOB_DIR/.status.json.tmp" "$HK_JOB_DIR/status.json"',
        '  exit "$hk_rc"',
        "fi",
        'exit "$hk_verdict"',
        "",
    ]
    return "\n".join(lines)


def rules_patterns_path(rules_path: str) -> str:
    """The run's error patterns, one per line, for grep (beside its rules file)."""
    return (rules_path[: -len(".json")] if rules_path.endswith(".json") else rules_path) + ".patterns"


def install_script(path: str, text: str, finished_attempt: int = 0) -> None:
    """Create the job's folder (keeping a finished attempt's files beside it) and write its
    script, executable where readable (the umask decides the rest)."""
    folder = os.path.dirname(path)
    if os.path.islink(folder):  # writing (and rotating logs) through it would reach outside jobs_dir
        raise OSError(errno.ELOOP, "the job folder is a symbolic link; housekeeper writes only inside jobs_dir", folder)
    make_dirs(folder)
    if finished_attempt:
        rotate_attempt_files(folder, finished_attempt)
    unlink_planted_links(folder)
    write_file(path, text.encode(), executable=True)


def unlink_planted_links(folder: str) -> None:
    """Remove symbolic links planted where a job's logs go (the links only, never their targets)."""
    for filename in OPENED_FILES:
        path = os.path.join(folder, filename)
        if os.path.islink(path):
            os.unlink(path)


def safe_umask() -> int:
    """This process's umask with others' write bit added: whatever the user's umask, nothing
    housekeeper makes (files, folders, what scheduler commands and local jobs make) is
    world-writable."""
    try:
        with open("/proc/self/status", "rb") as handle:  # reads it without changing it (Linux)
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) | 0o002
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current | 0o002


def make_dirs(path: str) -> None:
    """os.makedirs(path, exist_ok=True), but every folder it makes is created without
    others' write bit (the umask decides the rest)."""
    try:
        os.mkdir(path, 0o775)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not parent or parent == path:
            raise
        make_dirs(parent)
        make_dirs(path)


def open_fresh(path: str, append: bool = False) -> int:
    """A descriptor of `path` opened for writing, never through a symbolic link: a link there
    is removed (never its target). With `append`, a regular file keeps its content; without,
    whatever is at `path` (a stale temporary) is replaced by a new file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_EXCL)
    try:
        return os.open(path, flags, 0o664)  # the umask decides the rest (never world-writable)
    except FileExistsError:  # O_EXCL: anything there, a link included
        os.unlink(path)
    except OSError as exc:  # O_NOFOLLOW on a link: ELOOP
        if exc.errno != errno.ELOOP or not os.path.islink(path):
            raise
        os.unlink(path)
    return os.open(path, flags, 0o664)


def open_new(path: str, text: bool = False) -> IO[Any]:
    """Open a temporary file for writing as a new file (see open_fresh)."""
    return os.fdopen(open_fresh(path), "w" if text else "wb")


def write_file(path: str, data: bytes | Iterable[bytes], executable: bool = False) -> None:
    """Write a file whole or not at all (temporary file + rename); a failed write (a full
    disk) leaves neither a half-written file nor the temporary behind."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open_new(temporary) as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                handle.writelines(data)
        if executable:
            mode = os.stat(temporary).st_mode
            os.chmod(temporary, mode | ((mode & 0o444) >> 2))  # x where r, honouring the umask
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_array_manifest(base: str, headers: Iterable[tuple[str, str]], body: str) -> int:
    """An array's job scripts: each job's own header, ready-made, in `<base>.tasks`, the body
    they share once in `<base>.body`, and an index `<base>.index` of fixed-width lines (offset,
    length, script path) so that task i finds its header with one seek. Streams: holds one
    header at a time. Returns the index line width."""
    entries: list[bytes] = []
    offset = 0

    def blobs() -> Iterator[bytes]:
        nonlocal offset
        for path, text in headers:
            blob = text.encode()
            entries.append(f"{offset} {len(blob)} {path}".encode())
            offset += len(blob)
            yield blob

    written: list[str] = []
    try:
        write_file(base + ".tasks", blobs())
        written.append(base + ".tasks")
        write_file(base + ".body", body.encode())
        written.append(base + ".body")
        width = max(len(entry) for entry in entries) + 1
        write_file(base + ".index", (entry.ljust(width - 1) + b"\n" for entry in entries))
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    return width


def render_array_script(*, directives: Sequence[str], manifest: str, width: int, count: int) -> str:
    """The script an array submission hands the scheduler: task i installs job i's ready-made
    script in its folder and runs it (plain bash: no interpreter starts twice per task)."""
    q = shlex.quote
    index, tasks, body = q(manifest + ".index"), q(manifest + ".tasks"), q(manifest + ".body")
    return "\n".join(
        [
            "#!/bin/bash",
            *directives,
            f"# housekeeper array of {count} jobs: task i installs and runs job i's script from {manifest}.tasks",
            "umask o-w",
            "hk_index=${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-}}}",
            'if [ -z "$hk_index" ]; then echo "housekeeper: no array task index in the environment" >&2; exit 2; fi',
            f'read -r hk_at hk_len hk_script < <(dd if={index} bs={width} skip="$hk_index" count=1 2>/dev/null)',
            'if [ -z "$hk_script" ]; then echo "housekeeper: no job for array index $hk_index" >&2; exit 2; fi',
            'if [ -L "${hk_script%/*}" ]; then echo "housekeeper: ${hk_script%/*} is a symbolic link;'
            ' not writing through it" >&2; exit 2; fi',
            '[ -d "${hk_script%/*}" ] || mkdir -p "${hk_script%/*}" || exit 1',
            # The header by byte offset with one process (GNU dd); tail | head where dd cannot.
            f'{{ {{ dd if={tasks} iflag=skip_bytes,count_bytes skip="$hk_at" count="$hk_len" bs=65536 2>/dev/null'
            f' || tail -c +"$((hk_at + 1))" {tasks} | head -c "$hk_len"; }} && cat {body}; }} > "$hk_script.$$.tmp" || exit 1',
            'chmod +x "$hk_script.$$.tmp" && mv -f "$hk_script.$$.tmp" "$hk_script" || exit 1',
            # Run it in this shell (no second bash to start): it ends with the job's exit.
            "HK_ROTATE=1",
            '. "$hk_script"',
            "",
        ]
    )
