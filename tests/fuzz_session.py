"""How long and how a libFuzzer/atheris run in the tests goes, and what of its log a failure shows.

CI must be reproducible: by default a run takes a fixed number of executions from a fixed seed, so it
replays the same mutations every time (a finding there is the same finding on every machine and
every rerun). Exploring for new findings is a separate, longer run chosen by the developer:
EDGEMOE_FUZZ_SECONDS=600 (random seed unless EDGEMOE_FUZZ_SEED is set)."""
import os
import re

# Far above what a reproducible run needs; only stops a run on a machine far slower than expected.
SAFETY_SECONDS = 600


def fuzz_limits(default_runs: int) -> tuple[list[str], int]:
    """libFuzzer flags bounding the run, and the seconds to allow the process beyond its own work."""
    seconds = os.environ.get("EDGEMOE_FUZZ_SECONDS")
    if seconds:
        flags = [f"-max_total_time={int(seconds)}"]
        if os.environ.get("EDGEMOE_FUZZ_SEED"):
            flags.append(f"-seed={int(os.environ['EDGEMOE_FUZZ_SEED'])}")
        return flags, int(seconds) + 600
    seed = int(os.environ.get("EDGEMOE_FUZZ_SEED", "1"))
    return [f"-seed={seed}", f"-runs={default_runs}", f"-max_total_time={SAFETY_SECONDS}"], SAFETY_SECONDS + 600


def expected_executions(default_runs: int) -> int:
    """What a run bounded by fuzz_limits(default_runs) must at least execute: all its runs when it
    replays a fixed count (a run that stopped early tested less than CI claims), else at least one."""
    return 1 if os.environ.get("EDGEMOE_FUZZ_SECONDS") else default_runs


def executions(log: str) -> int:
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    return int(found.group(1)) if found else 0


_FINDING = re.compile(r"==\d+==ERROR|runtime error:|deadly signal|Uncaught|uncaught|Traceback|ERROR: libFuzzer")


def finding_report(log: str, limit: int = 12000) -> str:
    """The part of a failed run's log that says what went wrong: from the first sanitizer, crash or
    exception marker on (its stack traces), not the tail (the shadow-memory dump and statistics)."""
    first = _FINDING.search(log)
    start = max(0, first.start() - 500) if first else max(0, len(log) - limit)
    return log[start:start + limit]
