"""Regular expressions in the config (maintenance window matchers, attack signatures): why one
cannot be used, as a reason for its field rather than an exception."""

from __future__ import annotations

import re

# Python's parser recurses per group: 5,000 nested groups are a RecursionError, and fewer
# may still be one when compiled again deeper in another call stack. No real pattern nests
# groups this deep.
MAX_GROUP_DEPTH = 100


def group_depth(pattern: str) -> int:
    """How deeply `pattern`'s groups nest (escapes and character classes skipped)."""
    depth = deepest = 0
    index = 0
    in_class = False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A `]` first in the class (after an optional `^`) is a literal.
            index += 2 if pattern.startswith("^]", index + 1) else 1
            index += 1 if pattern.startswith("]", index) else 0
            continue
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
        index += 1
    return deepest


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` does not compile, or None. `a{4294967296}` is an OverflowError and deep
    nesting a RecursionError, not re.error: each is an answer here, never a traceback."""
    if group_depth(pattern) > MAX_GROUP_DEPTH:
        return f"groups nested deeper than {MAX_GROUP_DEPTH}"
    try:
        re.compile(pattern)
    except (re.error, OverflowError) as error:
        return str(error)
    except RecursionError:
        return "nested too deeply"
    return None
