"""
The filters every list endpoint takes (L{wazuhcluster.api.filters}): the
3.x parameter types, the list parameters, and the C{q} language, table by
table.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.api.envelope import ApiError
from wazuhcluster.api.filters import (
    AllOf, AnyOf, Comparison, ListQuery, checkParameter, checkParameters, parseQuery,
)

ITEMS = [
    {"id": "000", "name": "master", "ip": "10.0.0.1", "type": "master", "agents": 12,
     "os": {"name": "Ubuntu", "version": "18.04"}, "group": None, "date": "2020-06-01 10:00:00"},
    {"id": "003", "name": "node03", "ip": "10.0.0.3", "type": "worker", "agents": 3,
     "os": {"name": "CentOS", "version": "7"}, "group": ["default", "web"], "date": "2020-06-02 09:00:00"},
    {"id": "002", "name": "node02", "ip": "10.0.0.2", "type": "worker", "agents": 100,
     "os": {"name": "Ubuntu", "version": "20.04"}, "group": ["default"], "date": "2019-12-31 23:59:59"},
]
FIELDS = ("id", "name", "ip", "type", "agents", "os.name", "os.version", "group", "date")


def ids(query: dict[str, str]) -> list[str]:
    return [i["id"] for i in ListQuery.fromQuery(query).page(ITEMS, FIELDS)["items"]]


def code(f, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        f(*args)
    except ApiError as e:
        return e.code
    raise AssertionError(f"no error from {f.__name__}{args}")


#: q -> the IDs it keeps (in ITEMS' order).
QUERIES = [
    ("name=master", ["000"]),
    ("name=MASTER", ["000"]),                      # case does not matter
    ("name!=master", ["003", "002"]),
    ("type=worker;name=node02", ["002"]),          # ; is AND
    ("name=master,name=node02", ["000", "002"]),   # , is OR
    ("agents>10", ["000", "002"]),                 # numbers compare as numbers
    ("agents<10", ["003"]),
    ("agents>99", ["002"]),
    ("date>2020-01-01 00:00:00", ["000", "003"]),  # dates compare as text, in time order
    ("date<2020-06-01", ["002"]),
    ("name~node", ["003", "002"]),                 # ~ is contains
    ("ip~0.0.3", ["003"]),
    ("os.name=ubuntu", ["000", "002"]),            # nested fields
    ("os.version>18", ["000", "002"]),
    ("group=web", ["003"]),                        # a list matches when an element does
    ("group!=web", ["000", "002"]),                # ... and != when none does; null is != anything
    ("group=default", ["003", "002"]),
    ("name=master,type=worker;agents<10", ["000", "003"]),     # AND binds tighter than OR
    ("(name=master,type=worker);agents<10", ["003"]),          # parentheses
    ("((name=master))", ["000"]),
    ("(name=node03;agents=3),(name=master)", ["000", "003"]),
    ("name=nobody", []),
    ("agents=12", ["000"]),
]

#: Queries that are not queries, and their 3.x codes.
BAD_QUERIES = [
    ("name", 1407),              # no operator
    ("=master", 1407),           # no field
    ("name=", 1407),             # no value
    ("name=master;", 1407),      # a dangling separator
    (";name=master", 1407),
    ("name=master,,type=worker", 1407),
    ("(name=master", 1407),      # unbalanced parentheses
    ("name=master)", 1407),
    ("()", 1407),
    ("name$master", 1407),
    ("name==master", 1409),      # operators of other languages
    ("agents>=3", 1409),
    ("agents<=3", 1409),
    ("name=~mas", 1409),
    ("colour=red", 1408),        # a field the items do not have
    ("os.colour=red", 1408),
    ("name=master;colour=red", 1408),
]


class QueryLanguageTests(SynchronousTestCase):
    def test_table(self) -> None:
        for q, expected in QUERIES:
            with self.subTest(q=q):
                self.assertEqual(ids({"q": q}), expected, q)

    def test_errors(self) -> None:
        for q, expected in BAD_QUERIES:
            with self.subTest(q=q):
                self.assertEqual(code(ids, {"q": q}), expected, q)

    def test_errorsAreRequestErrors(self) -> None:
        for q, _ in BAD_QUERIES:
            try:
                ids({"q": q})
            except ApiError as e:
                self.assertEqual(e.status, 400)
                self.assertIn(e.message.split(":")[0].split(".")[0], e.message)

    def test_parseTree(self) -> None:
        self.assertEqual(
            parseQuery("a=1,b!=2;(c~3,d>4)"),
            AnyOf((
                Comparison("a", "=", "1"),
                AllOf((Comparison("b", "!=", "2"), AnyOf((Comparison("c", "~", "3"), Comparison("d", ">", "4"))))),
            )),
        )

    def test_valuesWithSpacesAndColons(self) -> None:
        self.assertEqual(parseQuery("description~Total rules: 3"), Comparison("description", "~", "Total rules: 3"))

    def test_normaliser(self) -> None:
        items = [{"status": "Never connected"}, {"status": "Active"}]
        norm = {"status": lambda s: s.lower().replace("_", " ")}
        page = ListQuery.fromQuery({"q": "status=never_connected"}).page(items, ("status",), norm)
        self.assertEqual(page["items"], [items[0]])


class ListParameterTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(ListQuery.fromQuery({}).page(ITEMS, FIELDS), {"totalItems": 3, "items": ITEMS})

    def test_offsetLimit(self) -> None:
        page = ListQuery.fromQuery({"offset": "1", "limit": "1"}).page(ITEMS, FIELDS)
        self.assertEqual(page, {"totalItems": 3, "items": [ITEMS[1]]})
        self.assertEqual(ids({"offset": "5"}), [])
        for query, expected in (
            ({"limit": "0"}, 1406), ({"limit": "1001"}, 1405), ({"limit": "x"}, 600),
            ({"offset": "-1"}, 600), ({"offset": "1.5"}, 600),
        ):
            self.assertEqual(code(ListQuery.fromQuery, query), expected, query)
        self.assertEqual(len(ids({"limit": "1000"})), 3)

    def test_sort(self) -> None:
        self.assertEqual(ids({"sort": "name"}), ["000", "002", "003"])
        self.assertEqual(ids({"sort": " name"}), ["000", "002", "003"])  # "+" arrives as a space
        self.assertEqual(ids({"sort": "+name"}), ["000", "002", "003"])
        self.assertEqual(ids({"sort": "-name"}), ["003", "002", "000"])
        self.assertEqual(ids({"sort": "-agents"}), ["002", "000", "003"])  # numbers as numbers
        # 3.x: the leading sign orders every field.
        self.assertEqual(ids({"sort": "-type,name"}), ["003", "002", "000"])
        # A field's own sign orders that field.
        self.assertEqual(ids({"sort": "-type,+name"}), ["002", "003", "000"])
        self.assertEqual(ids({"sort": "-os.name"}), ["000", "002", "003"])
        self.assertEqual(code(ids, {"sort": "age"}), 1403)
        self.assertEqual(code(ids, {"sort": "name;drop"}), 611)

    def test_search(self) -> None:
        self.assertEqual(ids({"search": "10.0.0.2"}), ["002"])
        self.assertEqual(ids({"search": "WORKER"}), ["003", "002"])
        self.assertEqual(ids({"search": "-worker"}), ["000"])
        self.assertEqual(ids({"search": "centos"}), ["003"])   # nested values too
        self.assertEqual(ids({"search": "web"}), ["003"])      # and list elements
        self.assertEqual(ids({"search": "name"}), [])          # not the field names
        self.assertEqual(code(ids, {"search": "a;b"}), 612)

    def test_select(self) -> None:
        page = ListQuery.fromQuery({"select": "name,os.name"}).page(ITEMS, FIELDS)
        self.assertEqual(page["items"][0], {"name": "master", "os": {"name": "Ubuntu"}})
        page = ListQuery.fromQuery({"select": "name"}).page(ITEMS, FIELDS, always=("id",))
        self.assertEqual(page["items"][0], {"id": "000", "name": "master"})
        self.assertEqual(code(ids, {"select": "name,age"}), 1724)
        self.assertEqual(code(ids, {"select": "name;x"}), 619)


class ParameterTests(SynchronousTestCase):
    def test_types(self) -> None:
        for kind, good, bad, expected in (
            ("numbers", "12", "1a", 600),
            ("names", "node-01.a_b", "node 01", 601),
            ("dates", "20200601", "2020-06-01", 605),
            ("ips", "10.0.0.1", "10.0.0.256", 606),
            ("paths", "etc/rules/local_rules.xml", "etc/rules/a b.xml", 608),
            ("boolean", "true", "yes", 618),
        ):
            checkParameter("p", good, kind)
            self.assertEqual(code(checkParameter, "p", bad, kind), expected, kind)

    def test_unknownParameter(self) -> None:
        checkParameters({"a": "1"}, {"a": "numbers", "b": "names"})
        error = self.assertRaises(ApiError, checkParameters, {"c": "1"}, {"a": "numbers", "b": "names"})
        self.assertEqual((error.code, error.status), (604, 400))
        self.assertIn("'c'", error.message)
        self.assertIn("a, b", error.message)
