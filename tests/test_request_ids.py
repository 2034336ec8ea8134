"""Server-made request ids: unique, increasing within a process, fresh in a forked child."""

from __future__ import annotations

import itertools
import os
import re
import time

from modelport.runtime.dataplane import new_id
from tests.conftest import skip_unless

ID = re.compile(r"[0-9a-f]{32}")


def test_ids_are_32_hex_digits_that_start_with_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert ID.fullmatch(made), made
    assert before <= int(made[:12], 16) <= after


def test_one_process_makes_unique_increasing_ids() -> None:
    made = [new_id() for _ in range(50_000)]
    assert len(set(made)) == len(made)
    assert all(a < b for a, b in itertools.pairwise(made)), "ids of one process must increase"
    assert len({m[12:20] for m in made}) == 1  # one process, one random part


@skip_unless(hasattr(os, "fork"), "fork", "os.fork (POSIX)")
def test_a_forked_child_draws_its_own_random_part() -> None:
    parent = [new_id() for _ in range(1000)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, one per line, then exit without running pytest's atexit
        try:
            os.write(write, "\n".join(new_id() for _ in range(1000)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    os.waitpid(pid, 0)
    assert len(child) == 1000 and all(ID.fullmatch(c) for c in child)
    assert {c[12:20] for c in child} != {p[12:20] for p in parent}
    assert not set(child) & set(parent)
