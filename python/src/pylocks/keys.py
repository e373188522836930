"""The lock key format, shared with the Rust client (see ``testdata/key-vectors.json``).

A key joins its components with ``:``: the root prefix (left out when ``None``), the prefix,
then exactly ``arity`` parts. Factories use :data:`DEFAULT_ROOT_PREFIX` (``pylocks``) unless
told otherwise. Inside each component a backslash is written as two backslashes
and a colon as backslash-colon, so distinct part tuples never share a key.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["DEFAULT_ROOT_PREFIX", "escape_component", "lock_key", "part_to_str"]

#: The root prefix a factory uses when none is given, as in the original library.
DEFAULT_ROOT_PREFIX = "pylocks"


def escape_component(component: str) -> str:
    """Escape one key component: ``\\`` becomes ``\\\\`` and ``:`` becomes ``\\:``."""
    return component.replace("\\", "\\\\").replace(":", "\\:")


def part_to_str(part: Any) -> str:
    """Turn one lock part into text: ``str`` as is, anything else but bytes through ``str()``.

    Bytes are refused (``str(b"x")`` is ``"b'x'"``, which is never what was meant): decode them
    first.
    """
    if isinstance(part, str):
        return part
    if isinstance(part, (bytes, bytearray, memoryview)):
        raise TypeError("lock parts must be text (or numbers), not bytes: decode them first")
    return str(part)


def lock_key(root_prefix: Optional[str], prefix: str, parts: Sequence[Any]) -> str:
    """Build the Redis key of the lock on ``parts`` (no arity check here).

    >>> lock_key("locks_example", "person", [42])
    'locks_example:person:42'
    >>> lock_key(None, "p", ["a:b"])
    'p:a\\\\:b'
    """
    components = [] if root_prefix is None else [root_prefix]
    components.append(prefix)
    components.extend(part_to_str(p) for p in parts)
    return ":".join(escape_component(c) for c in components)
