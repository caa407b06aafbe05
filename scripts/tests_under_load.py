"""Run README's test command on a machine made several times slower: N busy processes share the cores
with it for as long as it runs (the tests must hold on a machine 4x slower than the one that wrote them).

    python scripts/tests_under_load.py --hogs 6 [-- pytest args]

With 6 hogs on 2 cores the suite gets about a quarter of the CPU it would have alone. The hogs are
stopped when pytest ends, whatever its result; the exit status is pytest's."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def _hog() -> None:
    os.nice(0)
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hogs", type=int, default=3 * (os.cpu_count() or 2),
                        help="busy processes beside the tests (default 3 per core: about 4x slower)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    started = time.time()
    try:
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *args.pytest_args])
    finally:
        for hog in hogs:
            hog.kill()
    print(f"pytest exit {code} in {time.time() - started:.0f} s beside {args.hogs} busy processes "
          f"on {os.cpu_count()} cores", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
