"""
The parameters of the Wazuh 3.x API and the filters every list endpoint
takes, in one place.

L{checkParameter} validates one query parameter by its 3.x type (the
character classes of wazuh-api's C{input_validation.js}, with the same
error codes).  L{ListQuery} is the list parameters of one request:
C{offset}, C{limit} (default 500, at most 1000), C{sort}, C{search},
C{select} and C{q}, the 3.x query language; L{ListQuery.page} applies them
to a list of items.

The C{q} grammar (the 3.x API's, with the usual precedence: C{;} binds
tighter than C{,})::

    query      := conjunction ("," conjunction)*      # OR
    conjunction:= term (";" term)*                    # AND
    term       := "(" query ")" | field op value
    field      := [A-Za-z0-9_.-]+                     # "." reaches into nested fields
    op         := "=" | "!=" | "<" | ">" | "~"        # "~": contains
    value      := any characters but ; , ( )          # at least one

Comparisons ignore case; C{<} and C{>} compare numbers as numbers and the
rest as text (dates as C{YYYY-MM-DD hh:mm:ss} compare in time order).  A
list field matches when one of its elements does.  A field an item lacks,
or that is null, matches only C{!=}.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping, Sequence, Union

from attrs import field as attrField
from attrs import frozen

from .envelope import ApiError

#: The default and largest page of a list (the framework's database limits).
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000

#: The 3.x parameter types: the pattern a value must match, and the error code otherwise.
PARAMETER_TYPES: dict[str, tuple[re.Pattern[str], int]] = {
    "numbers": (re.compile(r"\d+"), 600),
    "names": (re.compile(r"[a-zA-Z0-9_\-.]+"), 601),
    "array_names": (re.compile(r"[a-zA-Z0-9_\-.]+(,[a-zA-Z0-9_\-.]+)*"), 601),
    "dates": (re.compile(r"\d{8}"), 605),
    "ips": (re.compile(
        r"(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)"
        r"(?:/(?:\d|[12]\d|3[0-2]))?|any|ANY"
    ), 606),
    "paths": (re.compile(r"[a-zA-Z0-9\-_.\\/:]+"), 608),
    "alphanumeric_param": (re.compile(r"[a-zA-Z0-9_,\-.+\s:]+"), 609),
    "sort_param": (re.compile(r"[a-zA-Z0-9_\-,\s+.]+"), 611),
    "search_param": (re.compile(r"[^;|&^*>]+"), 612),
    "boolean": (re.compile(r"true|false"), 618),
    "timeframe_type": (re.compile(r"\d+[smhd]?"), 617),
    "select_param": (re.compile(r"[a-zA-Z0-9_,.]+"), 619),
    # Checked by the parser, which says where the query goes wrong (1407).
    "query_param": (re.compile(r".+", re.DOTALL), 1407),
    # Any text (the value is checked by the endpoint).
    "text": (re.compile(r".*", re.DOTALL), 600),
}

#: The list parameters and their types.
LIST_PARAMETERS = {
    "offset": "numbers", "limit": "numbers", "sort": "sort_param",
    "search": "search_param", "select": "select_param", "q": "query_param",
}


def checkParameter(name: str, value: str, kind: str) -> None:
    """Raise the 3.x error of type C{kind} if C{value} is not one."""
    pattern, code = PARAMETER_TYPES[kind]
    if pattern.fullmatch(value) is None:
        raise ApiError(code, f"Field: {name}")


def checkParameters(query: Mapping[str, str], allowed: Mapping[str, str]) -> None:
    """
    Refuse a parameter C{allowed} does not name (604, listing those it
    does, as 3.x does) and one whose value is not of its type.  An empty
    value is left to the endpoint (an empty C{path} is 706, an empty
    C{limit} the default).
    """
    for name, value in query.items():
        kind = allowed.get(name)
        if kind is None:
            raise ApiError(604, f"Unknown parameter {name!r}. Allowed filters: {', '.join(sorted(allowed)) or 'none'}")
        if value:
            checkParameter(name, value, kind)


# The q language. -----------------------------------------------------------


@frozen
class Comparison:
    field: str
    operator: str
    value: str


@frozen
class AnyOf:
    terms: tuple["Query", ...]


@frozen
class AllOf:
    terms: tuple["Query", ...]


Query = Union[Comparison, AnyOf, AllOf]

_FIELD = re.compile(r"[A-Za-z0-9_.\-]+")
_OPERATOR = re.compile(r"!=|=|<|>|~")
_VALUE = re.compile(r"[^;,()]+")
#: Operators of other languages, told apart from a malformed query (1409).
_WRONG_OPERATOR = re.compile(r"==|>=|<=|=>|=<|!~|=~|<>|!(?!=)")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def fail(self, what: str) -> ApiError:
        return ApiError(1407, f"{what} at character {self.at + 1} of {self.text!r}")

    def peek(self) -> str:
        return self.text[self.at : self.at + 1]

    def query(self) -> Query:
        terms = [self.conjunction()]
        while self.peek() == ",":
            self.at += 1
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))

    def conjunction(self) -> Query:
        terms = [self.term()]
        while self.peek() == ";":
            self.at += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else AllOf(tuple(terms))

    def term(self) -> Query:
        if self.peek() == "(":
            self.at += 1
            inner = self.query()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.at += 1
            return inner
        field = _FIELD.match(self.text, self.at)
        if field is None:
            raise self.fail("expected a field name")
        self.at = field.end()
        wrong = _WRONG_OPERATOR.match(self.text, self.at)
        if wrong is not None:
            raise ApiError(1409, f"{wrong.group()!r}; use =, !=, <, > or ~")
        operator = _OPERATOR.match(self.text, self.at)
        if operator is None:
            raise self.fail("expected one of =, !=, <, >, ~")
        self.at = operator.end()
        value = _VALUE.match(self.text, self.at)
        if value is None:
            raise self.fail("expected a value")
        self.at = value.end()
        return Comparison(field.group(), operator.group(), value.group())


def parseQuery(text: str) -> Query:
    """The query C{text} (the C{q} parameter); 1407 or 1409 if it is not one."""
    parser = _Parser(text)
    parsed = parser.query()
    if parser.at != len(text):
        raise parser.fail("unexpected " + repr(parser.peek()))
    return parsed


def queryFields(query: Query) -> list[str]:
    """The fields C{query} names, in order."""
    if isinstance(query, Comparison):
        return [query.field]
    return [f for term in query.terms for f in queryFields(term)]


def valueAt(item: Mapping[str, Any], path: str) -> Any:
    """The value of the dotted field C{path} of C{item}, or None."""
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(value: Any, operator: str, wanted: str) -> bool:
    if isinstance(value, list):
        if operator == "!=":
            return all(_compare(v, "!=", wanted) for v in value)
        return any(_compare(v, operator, wanted) for v in value)
    if value is None:
        return operator == "!="
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    a, b = text.lower(), wanted.lower()
    if operator == "=":
        return a == b
    if operator == "!=":
        return a != b
    if operator == "~":
        return b in a
    x, y = _number(text), _number(wanted)
    if x is not None and y is not None:
        return x < y if operator == "<" else x > y
    return a < b if operator == "<" else a > b


Normaliser = Callable[[str], str]


def matches(query: Query, item: Mapping[str, Any], normalisers: Mapping[str, Normaliser] = {}) -> bool:
    """Whether C{item} matches C{query}."""
    if isinstance(query, AnyOf):
        return any(matches(t, item, normalisers) for t in query.terms)
    if isinstance(query, AllOf):
        return all(matches(t, item, normalisers) for t in query.terms)
    value = valueAt(item, query.field)
    wanted = query.value
    normalise = normalisers.get(query.field)
    if normalise is not None:
        wanted = normalise(wanted)
        value = normalise(value) if isinstance(value, str) else value
    return _compare(value, query.operator, wanted)


# The list parameters. ----------------------------------------------------------


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name, "")
    if text == "":
        return default
    checkParameter(name, text, "numbers")
    return int(text)


@frozen
class ListQuery:
    """The list parameters of one request, checked."""

    offset: int = 0
    limit: int = DEFAULT_LIMIT
    #: (field, descending) in order of importance.
    sort: tuple[tuple[str, bool], ...] = ()
    #: (text, negated) or None.
    search: tuple[str, bool] | None = None
    select: tuple[str, ...] = ()
    q: Query | None = None
    qText: str = ""
    raw: Mapping[str, str] = attrField(factory=dict)

    @classmethod
    def fromQuery(cls, query: Mapping[str, str]) -> "ListQuery":
        """The list parameters of C{query}; the 3.x errors for bad ones."""
        offset = _integer(query, "offset", 0)
        limit = _integer(query, "limit", DEFAULT_LIMIT)
        if "limit" in query and limit == 0:
            raise ApiError(1406)
        if limit > MAX_LIMIT:
            raise ApiError(1405, str(limit))
        sort: list[tuple[str, bool]] = []
        text = query.get("sort", "")
        if text:
            checkParameter("sort", text, "sort_param")
            # 3.x: a leading sign orders every field ("+" arrives as a space);
            # a field's own "-" orders that field.
            descending = text.startswith("-")
            body = text[1:] if text[:1] in "-+ " else text
            for part in body.split(","):
                part = part.strip()
                if not part:
                    continue
                own = part[0] in "-+"
                name = part.lstrip("-+").strip()
                sort.append((name, part[0] == "-" if own else descending))
        search = None
        text = query.get("search", "")
        if text:
            checkParameter("search", text, "search_param")
            negated = text.startswith("-")
            needle = text[1:] if negated else text
            if len(needle) > 1 and needle[0] == needle[-1] == '"':
                needle = needle[1:-1]
            search = (needle, negated)
        select: tuple[str, ...] = ()
        text = query.get("select", "")
        if text:
            checkParameter("select", text, "select_param")
            select = tuple(f.strip() for f in text.split(",") if f.strip())
        q = parseQuery(query["q"]) if query.get("q") else None
        return cls(offset, limit, tuple(sort), search, select, q, query.get("q", ""), dict(query))

    def page(
        self, items: Sequence[Mapping[str, Any]], fields: Sequence[str],
        normalisers: Mapping[str, Normaliser] = {}, always: Sequence[str] = (),
    ) -> dict[str, Any]:
        """
        The page of C{items} asked for, as C{{"totalItems", "items"}};
        C{fields} are the fields an item may have (dotted for nested ones,
        or a prefix of them), C{always} the fields C{select} always keeps.
        """
        known = _Fields(fields)
        for name, _ in self.sort:
            known.check(name, 1403, "sort")
        for name in self.select:
            known.check(name, 1724, "select")
        if self.q is not None:
            for name in queryFields(self.q):
                known.check(name, 1408, "q")
        chosen = list(items)
        if self.q is not None:
            chosen = [item for item in chosen if matches(self.q, item, normalisers)]
        if self.search is not None:
            needle, negated = self.search
            needle = needle.lower()
            chosen = [item for item in chosen if negated != any(needle in v.lower() for v in _values(item))]
        for name, descending in reversed(self.sort):
            chosen.sort(key=lambda item: _sortKey(valueAt(item, name)), reverse=descending)
        total = len(chosen)
        page = chosen[self.offset : self.offset + self.limit]
        if self.select:
            wanted = list(dict.fromkeys([*always, *self.select]))
            page = [_selected(item, wanted) for item in page]
        return {"totalItems": total, "items": page}


class _Fields:
    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)

    def check(self, name: str, code: int, parameter: str) -> None:
        if not any(f == name or f.startswith(name + ".") for f in self.fields):
            raise ApiError(code, f"{name!r} in {parameter}; the fields are {', '.join(self.fields)}")


def _selected(item: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for path in wanted:
        parts = path.split(".")
        value = valueAt(item, path)
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def _values(value: Any) -> list[str]:
    """Every value of C{value} as text, nested ones included (not the keys)."""
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _values(v)]
    if isinstance(value, list):
        return [t for v in value for t in _values(v)]
    return [] if value is None else [_text(value)]


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def _sortKey(value: Any) -> tuple[int, Any]:
    # Numbers before text, None last; never compares a number with a string.
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, _text(value).lower())
