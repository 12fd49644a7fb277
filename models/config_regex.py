"""Regular expressions in the config: why one cannot be used, as a reason for its field rather
than an exception. Maintenance window matchers run in Python (`re`); attack signatures and
`scanner_agents` run in Postgres (`~*`, its ARE dialect), and are judged as Postgres reads them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

# Python's parser recurses per group: 5,000 nested groups are a RecursionError, and fewer
# may still be one when compiled again deeper in another call stack. No real pattern nests
# groups this deep.
MAX_GROUP_DEPTH = 100
# Postgres' RE_DUP_MAX: `a{256}` is "invalid repetition count(s)".
POSTGRES_MAX_REPEAT = 255
_DIGITS = frozenset("0123456789")
_BOUND = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")
# Postgres' escapes as Python writes them: word boundaries (the built-in signatures use \m
# and \M), and \b, which is a backspace to Postgres.
_POSTGRES_ESCAPES = {
    "\\m": r"\b",
    "\\M": r"\b",
    "\\y": r"\b",
    "\\Y": r"\B",
    "\\b": r"\x08",
}


def _tokens(pattern: str) -> Iterator[tuple[int, str, bool]]:
    """(index, token, inside a bracket expression) for each token of `pattern`: a character,
    or an escape with the character after its backslash (`\\(` opens no group)."""
    index = 0
    in_class = False
    while index < len(pattern):
        start = index
        char = pattern[index]
        if char == "\\":
            index += 2
        elif in_class:
            in_class = char != "]"
            index += 1
        elif char == "[":
            in_class = True
            # A `]` first in the class (after an optional `^`) is a literal.
            index += 2 if pattern.startswith("^]", index + 1) else 1
            index += 1 if pattern.startswith("]", index) else 0
        else:
            index += 1
        yield start, pattern[start:index], in_class and char != "["


def group_depth(pattern: str) -> int:
    """How deeply `pattern`'s groups nest (escapes and bracket expressions skipped)."""
    depth = deepest = 0
    for _, token, in_class in _tokens(pattern):
        if in_class:
            continue
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth -= 1
    return deepest


def regex_problem(pattern: str) -> str | None:
    """Why Python's `re` cannot compile `pattern`, or None. `a{4294967296}` is an
    OverflowError and deep nesting a RecursionError, not re.error: each is an answer here,
    never a traceback."""
    if group_depth(pattern) > MAX_GROUP_DEPTH:
        return f"groups nested deeper than {MAX_GROUP_DEPTH}"
    try:
        with warnings.catch_warnings():
            # `[[:alpha:]]` is a POSIX class to Postgres and a "possible nested set" to Python.
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, OverflowError) as error:
        return str(error)
    except RecursionError:
        return "nested too deeply"
    return None


def postgres_regex_problem(pattern: str) -> str | None:
    """Why Postgres refuses `pattern` in `~*`, or None: what Python has and Postgres has not
    (counts over 255, named and atomic groups, possessive quantifiers) and Postgres' braces
    are judged here, the syntax both share by Python's parser, given Postgres' escapes in
    Python's spelling. tests/integration/test_config_apply.py holds the two to the same
    answers."""
    python = []
    quantified_at = -1  # where the last quantifier ended: a `+` right after it is possessive
    previous = ""
    for index, token, in_class in _tokens(pattern):
        python.append(token if in_class else _POSTGRES_ESCAPES.get(token, token))
        if in_class:
            continue
        bound = None
        if token == "{":
            # A brace before a digit opens a bound to Postgres, and is a plain brace otherwise
            # (`a{,3}` is a quantifier only to Python).
            if pattern[index + 1 : index + 2] not in _DIGITS:
                python[-1] = r"\{"
            elif not (bound := _BOUND.match(pattern, index)):
                return "a brace that opens no bound like {2} or {2,5}"
            elif max(int(n) for n in bound.groups() if n) > POSTGRES_MAX_REPEAT:
                return f"a repetition count over {POSTGRES_MAX_REPEAT}, Postgres' limit"
        if token == "+" and quantified_at == index:
            return "a possessive quantifier (`*+`, `++`, `?+`): Postgres has none"
        if pattern.startswith(("(?P", "(?>", "(?<"), index) and not pattern.startswith(
            ("(?<=", "(?<!"), index
        ):
            return "a named or atomic group: Postgres has neither"
        if token in ("*", "+", "?") and previous != "(":  # `(?` opens a group
            quantified_at = index + 1
        elif bound:
            quantified_at = bound.end()
        previous = token
    return regex_problem("".join(python))
