"""Run a command on a machine made several times slower: N busy processes share the cores with it for as
long as it runs (the tests, and the call, must hold on a machine 3-4x slower than the one that wrote them).

    python scripts/under_load.py --hogs 6                      # README's test command, about 4x slower
    python scripts/under_load.py --hogs 6 -- -x tests/test_screen.py     # pytest with these arguments
    python scripts/under_load.py --hogs 4 -- callsynth demo --video CLIP --max-frames 450
    python scripts/under_load.py --hogs 2 --nice 1 -- callsynth bench --warp-only   # how slow, in bench's terms
    python scripts/under_load.py --hogs 2 --command-nice 4 -- callsynth bench --warp-only   # slower still

With 4 hogs on 2 cores a single thread gets about a third of a core, with 6 about a quarter. With one hog a
core at a lower priority (`--nice`) a thread that competes with it gets a share set by the kernel's weights
(nice 1: about 55 %, 2: 61 %, 3: 66 %), and no more threads wait for a turn than on a bare machine: a
machine whose every core is that much slower. On a CPU fast enough that even an even share (`--nice 0`)
leaves the command faster than the machine to emulate, the command itself runs at a lower priority
(`--command-nice N`, its processes' niceness; the hogs keep theirs): at 4, a thread that competes with a
hog gets about 29 % of a core (on a 2-core AMD EPYC at 2.6 GHz, where `bench --warp-only` reads 3.1 ms
bare, it read 10.9-15.3 ms so, against the evaluating machine's 14.5, and 6.3-6.8 ms under `--hogs 2
--nice 1`). A thread woken at a lower priority also waits longer for its turn than on a slow CPU, so
latencies measured so are an upper bound. Time `callsynth bench --warp-only` under the same load, in the
same hour, to say how slow (this machine's speed drifts within the hour). The hogs are
stopped when the command ends, whatever its result; the exit status is the command's. `callsynth` as the
command's first word means this Python's `-m callsynth.cli`."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import time


def _hog(nice: int) -> None:
    os.nice(nice)
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hogs", type=int, default=3 * (os.cpu_count() or 2),
                        help="busy processes beside the command (default 3 per core: about 4x slower)")
    parser.add_argument("--nice", type=int, default=0,
                        help="the busy processes' niceness (0-19; default 0: the command's own priority)")
    parser.add_argument("--command-nice", type=int, default=0,
                        help="the command's own niceness (0-19; default 0): below the hogs' on a CPU too fast "
                             "for --nice alone to emulate a slower one")
    parser.add_argument("command", nargs="*", help="the command, after -- (default: pytest -q; arguments "
                                                   "that start with '-' go to pytest)")
    args = parser.parse_args()
    command = args.command
    if not command or command[0].startswith("-"):           # pytest, with the arguments given if any
        command = [sys.executable, "-m", "pytest", "-q", *command]
    elif command[0] == "callsynth":
        command = [sys.executable, "-m", "callsynth.cli", *command[1:]]
    if args.command_nice:
        command = ["nice", "-n", str(args.command_nice), *command]
    hogs = [multiprocessing.Process(target=_hog, args=(args.nice,), daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    started = time.time()
    # stopped itself (kill, Ctrl-C), it stops the command too: killed alone it left the command running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    running = None
    try:
        running = subprocess.Popen(command)
        code = running.wait()
    except OSError as exc:
        print(f"cannot run {command[0]!r}: {exc}", file=sys.stderr)
        code = 2
    finally:
        if running is not None and running.poll() is None:
            running.terminate()
            try:
                running.wait(timeout=10)
            except subprocess.TimeoutExpired:
                running.kill()
        for hog in hogs:
            hog.kill()
    print(f"exit {code} in {time.time() - started:.0f} s beside {args.hogs} busy processes "
          f"{f'(nice {args.nice}) ' if args.nice else ''}"
          f"on {os.cpu_count()} cores{f', the command at nice {args.command_nice}' if args.command_nice else ''}",
          flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
