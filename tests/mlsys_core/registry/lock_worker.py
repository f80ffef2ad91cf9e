"""A child process for the lock tests: take the registry lock ``rounds`` times and, inside,
append ``enter`` and ``exit`` lines to a shared log (``O_APPEND``: whole lines), holding it
``hold_s`` in between; or, with ``--hold-forever``, take it once and wait to be killed."""

from __future__ import annotations

import argparse
import os
import time

from mlsys_core.registry.locking import RegistryLock
from mlsys_core.tracking import tracking_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("model")
    parser.add_argument("log")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold-s", type=float, default=0.02)
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--beat-s", type=float, default=3.0)
    parser.add_argument("--hold-forever", action="store_true")
    args = parser.parse_args()
    lock = RegistryLock(
        tracking_client(args.uri), args.model, lease_s=args.lease_s, beat_s=args.beat_s
    )
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    me = os.getpid()
    for _ in range(1 if args.hold_forever else args.rounds):
        with lock:
            os.write(fd, f"enter {me} {time.time():.6f}\n".encode())
            if args.hold_forever:
                while True:
                    time.sleep(1)
            time.sleep(args.hold_s)
            os.write(fd, f"exit {me} {time.time():.6f}\n".encode())
    os.close(fd)


if __name__ == "__main__":
    main()
