"""The key format: every vector in testdata/key-vectors.json, shared with the Rust client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from pylocks.blocking import RedisLockFactory
from pylocks.keys import DEFAULT_ROOT_PREFIX, lock_key

VECTORS_FILE = Path(__file__).resolve().parents[2] / "testdata" / "key-vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))["vectors"]


def test_vectors_file_is_not_empty() -> None:
    assert len(VECTORS) >= 10


@pytest.mark.parametrize("vector", VECTORS, ids=[v["key"] for v in VECTORS])
def test_key_vector(vector: dict) -> None:
    # no root_prefix field: a factory given none, which uses the default ("pylocks")
    root = vector.get("root_prefix", DEFAULT_ROOT_PREFIX)
    assert lock_key(root, vector["prefix"], vector["parts"]) == vector["key"]
    # the factory builds the same key, and its arity check accepts exactly these parts
    given = {"root_prefix": vector["root_prefix"]} if "root_prefix" in vector else {}
    factory = RedisLockFactory(redis.Redis(port=1), prefix=vector["prefix"], ttl=1,
                               arity=vector["arity"], **given)
    assert factory.key(*vector["parts"]) == vector["key"]


def test_some_vectors_use_the_default_root_prefix() -> None:
    assert DEFAULT_ROOT_PREFIX == "pylocks"
    defaults = [v for v in VECTORS if "root_prefix" not in v]
    assert defaults and all(v["key"].startswith("pylocks:") for v in defaults)


def test_distinct_part_tuples_never_share_a_key() -> None:
    keys = {}
    for v in VECTORS:
        ident = (v.get("root_prefix", DEFAULT_ROOT_PREFIX), v["prefix"], tuple(v["parts"]))
        assert keys.setdefault(v["key"], ident) == ident


def test_numbers_are_parts_bytes_are_not() -> None:
    assert lock_key("r", "p", [42, 7]) == "r:p:42:7"
    with pytest.raises(TypeError):
        lock_key("r", "p", [b"42"])


def test_lease_error_maps_the_server_codes() -> None:
    from pylocks.errors import LockExpired, LockNotHeld, LockNotOwned, lease_error

    held = lease_error("NOTHELD the lock is not held by any lease", "k", "l")
    assert isinstance(held, LockExpired) and isinstance(held, LockNotOwned)
    assert isinstance(held, LockNotHeld) and str(held) == "NOTHELD the lock is not held by any lease"
    assert (held.key, held.lease_id) == ("k", "l")
    assert isinstance(lease_error("NOTOWNED the lock is held by another lease"), LockNotOwned)
    assert lease_error("WRONGTYPE Operation against a key") is None
    assert lease_error("NOTHELDX") is None
