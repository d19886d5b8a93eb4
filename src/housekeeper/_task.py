"""The array task launcher: runs on the compute node as array task i.

    python -m housekeeper._task MANIFEST INDEX

An array submission writes one manifest (`<id>.tasks`: one msgpack record per job, and
`<id>.index`: their byte offsets) instead of a folder and a script per job, so that flushing a
million jobs does not wait on a million mkdirs. Task i reads its record, creates its job folder,
keeps the previous attempt's files beside the new ones, writes its job script (the same one a
single submission gets) and execs it. Imports neither polars nor pyarrow, so it starts fast.
"""
from __future__ import annotations

import os
import struct
import sys

import msgspec

from .jobscript import render_job_script, rotate_attempt_files

INDEX_ENTRY = struct.Struct("<Q")


class TaskRecord(msgspec.Struct, array_like=True):
    """One job of an array, as the manifest holds it."""

    job_id: int
    attempt: int
    name: str
    job_dir: str
    script: str
    command: str
    workdir: str
    env: dict[str, str]
    expected_files: list[str]
    rules_path: str
    python: str
    directives: list[str]


_DECODER = msgspec.msgpack.Decoder(TaskRecord)


def write_manifest(base: str, records: list[TaskRecord]) -> None:
    """`<base>.tasks` and `<base>.index`, each written whole and renamed into place."""
    encoder = msgspec.msgpack.Encoder()
    chunks = [encoder.encode(r) for r in records]
    offsets = bytearray(INDEX_ENTRY.size * (len(chunks) + 1))
    position = 0
    for i, chunk in enumerate(chunks):
        INDEX_ENTRY.pack_into(offsets, i * INDEX_ENTRY.size, position)
        position += len(chunk)
    INDEX_ENTRY.pack_into(offsets, len(chunks) * INDEX_ENTRY.size, position)
    for suffix, data in ((".tasks", b"".join(chunks)), (".index", bytes(offsets))):
        temporary = f"{base}{suffix}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, base + suffix)


def read_record(base: str, index: int) -> TaskRecord:
    with open(base + ".index", "rb") as handle:
        handle.seek(index * INDEX_ENTRY.size)
        raw = handle.read(2 * INDEX_ENTRY.size)
    if len(raw) != 2 * INDEX_ENTRY.size:
        raise IndexError(f"no task {index} in {base}")
    start, end = INDEX_ENTRY.unpack_from(raw, 0)[0], INDEX_ENTRY.unpack_from(raw, INDEX_ENTRY.size)[0]
    with open(base + ".tasks", "rb") as handle:
        handle.seek(start)
        return _DECODER.decode(handle.read(end - start))


def prepare(record: TaskRecord) -> str:
    """Create the job's folder and script (SPEC §8 holds from here on); returns the script."""
    os.makedirs(record.job_dir, exist_ok=True)
    if record.attempt > 1:
        rotate_attempt_files(record.job_dir, record.attempt - 1)
    text = render_job_script(
        job_id=record.job_id, attempt=record.attempt, name=record.name, command=record.command,
        folder=record.job_dir, workdir=record.workdir, env=record.env, expected_files=record.expected_files,
        rules_path=record.rules_path, directives=record.directives, python=record.python,
    )  # fmt: skip
    temporary = f"{record.script}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    mode = os.stat(temporary).st_mode
    os.chmod(temporary, mode | ((mode & 0o444) >> 2))
    os.replace(temporary, record.script)
    return record.script


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m housekeeper._task MANIFEST INDEX", file=sys.stderr)
        return 2
    script = prepare(read_record(argv[0], int(argv[1])))
    env = dict(os.environ)
    was = env.pop("HK_PYTHONPATH_WAS", "__unset__")
    if was == "__unset__":
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = was
    os.execve("/bin/bash", ["/bin/bash", script], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
