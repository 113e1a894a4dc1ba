"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import os


def drop_page_cache() -> bool:
    """Drop the page cache so the next reads come from storage (root only); False if not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def report(text: str, write: str | None) -> None:
    """Print a result section and, if asked, append it to a results file (bench/RESULTS.md)."""
    print(text)
    if write:
        with open(write, "a", encoding="utf-8") as f:
            f.write(text)
