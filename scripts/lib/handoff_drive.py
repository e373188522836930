"""Two clients pass one token back and forth, for scripts/bench-handoff-instructions.

usage: handoff_drive.py PORT lock|list PASSES BLOCK_MS

lock: each client loops PYLOCK.ACQUIRE key 60000 LEASE own BLOCK ms, then PYLOCK.RELEASE.
list: each client loops BLPOP key timeout, then RPUSH key token (one element in the list).
Every pass is one hand-off from a client to a blocked one. Exits non-zero if a wait times out.
"""
import multiprocessing as mp
import sys

import redis


def worker(port: int, mode: str, client: int, n: int, block_ms: str) -> None:
    r = redis.Redis(port=port)
    lease = f"handoff-client-{client}"
    for _ in range(n):
        if mode == "lock":
            got = r.execute_command("PYLOCK.ACQUIRE", "handoff:lock", 60000, "LEASE", lease, "BLOCK", block_ms)
            if got is None:
                sys.exit("ACQUIRE timed out")
            if r.execute_command("PYLOCK.RELEASE", "handoff:lock", lease) != 1:
                sys.exit("RELEASE failed")
        else:
            if r.blpop("handoff:list", timeout=float(block_ms) / 1000) is None:
                sys.exit("BLPOP timed out")
            r.rpush("handoff:list", "token")


def main() -> None:
    port, mode, passes, block_ms = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    r = redis.Redis(port=port)
    r.flushall()
    if mode == "list":
        r.rpush("handoff:list", "token")
    procs = [mp.Process(target=worker, args=(port, mode, c, passes // 2, block_ms)) for c in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    if any(p.exitcode != 0 for p in procs):
        sys.exit("a client failed")


if __name__ == "__main__":
    main()
