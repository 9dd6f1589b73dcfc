"""Starts one command, waits for it and reports what it cost: ``python launcher.py REPORT COMMAND...``.

The benchmark harness does not start jobs itself: a process started from a large parent inherits the
parent's peak resident memory in ``ru_maxrss`` (Linux records the peak of the memory an ``exec`` replaces,
and a child starts as a copy of its parent, or shares its memory while it ``vfork``-s), so every job would
report at least the harness's own memory. This small process (standard library only, started with
``python -I -S``) is the parent instead: the job's ``ru_maxrss`` is then the job's own peak (or this
launcher's few MB, whichever is larger).

It writes ``REPORT`` (JSON: ``exit_code``, ``wall_s`` from just before the command starts to its end,
``peak_rss_kb``) and exits with the command's exit code (128 + N when a signal N ended it).
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    """Runs ``argv[1:]`` and writes the report to ``argv[0]``."""
    report, command = argv[0], argv[1:]
    start = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as handle:
        json.dump({"exit_code": code, "wall_s": wall, "peak_rss_kb": usage.ru_maxrss}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
