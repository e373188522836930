"""Writes RESP command streams for scripts/bench-instructions (to pipe into redis-cli --pipe).

usage: cg_cmds.py PHASE N OUT
Phases: setup-held (N locks lk:i held by LEASE, N strings sk:i = LEASE), acquire (ACQUIRE on
fresh keys), set (SET NX PX on fresh keys), confirm, confirm-extend, get, evalsha-extend,
release, evalsha-release (each over the N held keys once, in order).
"""
import sys

LEASE = "6f2c1d4e-8b1a-4c55-9a8e-0d1e2f3a4b5c"
RELEASE_LUA = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end"
EXTEND_LUA = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('pexpire',KEYS[1],ARGV[2]) else return 0 end"


def sha1(s: str) -> str:
    import hashlib
    return hashlib.sha1(s.encode()).hexdigest()


def resp(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def main() -> None:
    phase, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cmds = {
        "setup-held": lambda i: resp("PYLOCK.ACQUIRE", f"lk:{i}", "3600000", "LEASE", LEASE)
        + resp("SET", f"sk:{i}", LEASE, "PX", "3600000"),
        "acquire": lambda i: resp("PYLOCK.ACQUIRE", f"fresh:{i}", "60000"),
        "acquire-lease": lambda i: resp("PYLOCK.ACQUIRE", f"freshl:{i}", "60000", "LEASE", LEASE),
        "set": lambda i: resp("SET", f"plain:{i}", LEASE, "NX", "PX", "60000"),
        "confirm": lambda i: resp("PYLOCK.CONFIRM", f"lk:{i}", LEASE),
        "confirm-extend": lambda i: resp("PYLOCK.CONFIRM", f"lk:{i}", LEASE, "EXTEND", "3600000"),
        "get": lambda i: resp("GET", f"sk:{i}"),
        "evalsha-extend": lambda i: resp("EVALSHA", sha1(EXTEND_LUA), "1", f"sk:{i}", LEASE, "3600000"),
        "release": lambda i: resp("PYLOCK.RELEASE", f"lk:{i}", LEASE),
        "evalsha-release": lambda i: resp("EVALSHA", sha1(RELEASE_LUA), "1", f"sk:{i}", LEASE),
    }
    with open(path, "wb") as f:
        if phase == "setup-held":
            f.write(resp("SCRIPT", "LOAD", RELEASE_LUA) + resp("SCRIPT", "LOAD", EXTEND_LUA))
        make = cmds[phase]
        for i in range(n):
            f.write(make(i))


main()
