"""
Checking a CDB list before the API writes it, in time linear in its size.

A CDB list is lines of C{key:value}.  The key is either quoted (C{"..."},
any characters but a quote, at least one) or bare: no C{:}, no quote and
none of the characters that break Wazuh's list compiler
(C{& % $ ; ! < > ' ` | \\}), neither starting nor ending with white space.
The value has no C{:} and no quote.  Blank lines are allowed.

This used to be one regular expression whose nested repetitions
backtracked: a 120 KB line of spaces took minutes, holding the interpreter
lock all along.  Here each line is cut at its first colon (or closing
quote) and each part is checked against a set of characters, so every
character is looked at a bounded number of times.  Lines are at most
L{MAX_LINE_LENGTH} characters.
"""

from __future__ import annotations

#: The longest line of a list taken (Wazuh's own list lines are short).
MAX_LINE_LENGTH = 65536

#: Characters a bare key never holds.
_KEY_FORBIDDEN = frozenset(':"&%$;!<>\'`|\\')

#: Characters a value never holds.
_VALUE_FORBIDDEN = frozenset(':"')


class ListProblem(ValueError):
    """A list that is not valid: the line number and what is wrong with it."""

    def __init__(self, number: int, problem: str) -> None:
        super().__init__(f"line {number}: {problem}")
        self.number = number
        self.problem = problem


def lineProblem(line: str) -> str | None:
    """Why C{line} is not C{key:value}, or C{None} if it is (blank lines are)."""
    if len(line) > MAX_LINE_LENGTH:
        return f"the line is longer than {MAX_LINE_LENGTH} characters"
    if not line or line.isspace():
        return None
    if line[0] == '"':
        end = line.find('"', 1)
        if end < 0:
            return "the quoted key has no closing quote"
        if end == 1:
            return "the key is empty"
        rest = line[end + 1 :]
        if not rest.startswith(":"):
            return "a ':' must follow the quoted key"
    else:
        colon = line.find(":")
        if colon < 0:
            return "there is no ':' between key and value"
        key = line[:colon]
        if not key:
            return "the key is empty"
        if key[0].isspace() or key[-1].isspace():
            return "the key starts or ends with white space"
        if not _KEY_FORBIDDEN.isdisjoint(key):
            return "the key holds one of \" & % $ ; ! < > ' ` | \\ (quote the key)"
        rest = line[colon:]
    if not _VALUE_FORBIDDEN.isdisjoint(rest[1:]):
        return "the value holds a ':' or a quote"
    return None


def checkList(text: str) -> None:
    """Raise L{ListProblem} for the first line of C{text} that is not valid."""
    for number, line in enumerate(text.splitlines(), start=1):
        problem = lineProblem(line)
        if problem is not None:
            raise ListProblem(number, problem)
