"""
The CDB list check (L{wazuhcluster.api.cdblist}): the lines the old regular
expression took and refused are still taken and refused, and the lines that
made that expression backtrack for minutes are answered.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.api.cdblist import MAX_LINE_LENGTH, ListProblem, checkList, lineProblem

#: The expression lists were checked with before (it backtracks on long keys
#: with inner spaces): the reference for short lines only.
_OLD = re.compile(r'(?:"[^"\n]+"|[^:"&%$;!<>\'\s`|\\]+(?:[^:"&%$;!<>\'`|\\]*[^:"&%$;!<>\'\s`|\\])?):[^:"\n]*')

_ALPHABET = st.sampled_from(list('ab :"&%$;!<>\'`|\\\t\u00a0\u3000x1'))


class LineTests(SynchronousTestCase):
    @settings(max_examples=3000, deadline=None)
    @given(st.text(_ALPHABET, max_size=12))
    def test_sameAsTheOldExpression(self, line: str) -> None:
        """On short lines, valid exactly when the old expression matched (blank lines aside)."""
        old = not line.strip() or _OLD.fullmatch(line) is not None
        self.assertEqual(lineProblem(line) is None, old, repr(line))

    def test_examples(self) -> None:
        for good in ("key:value", '"a:b c":value', "a b:", "1.2.3.4:", "k:v v", "   "):
            self.assertIsNone(lineProblem(good), good)
        for bad in ("key", " key:v", "key :v", "a|b:v", 'k:v"', "k:v:w", '"":v', '"abc', '"a"b:v'):
            self.assertIsNotNone(lineProblem(bad), bad)

    def test_pathologicalLines(self) -> None:
        """Lines of 120 KB that made the old expression backtrack get their answer."""
        for line in ("a" + " " * 120_000 + "\x01", "a" + " a" * 60_000 + " :", "a" * 120_000):
            problem = lineProblem(line[:MAX_LINE_LENGTH])
            self.assertIsNotNone(problem)

    def test_longLines(self) -> None:
        self.assertIsNone(lineProblem("k" * (MAX_LINE_LENGTH - 2) + ":v"))
        self.assertEqual(
            lineProblem("k" * MAX_LINE_LENGTH + ":v"),
            f"the line is longer than {MAX_LINE_LENGTH} characters",
        )


class ListTests(SynchronousTestCase):
    def test_namesTheLine(self) -> None:
        with self.assertRaises(ListProblem) as caught:
            checkList("a:1\n\nb:2\nc d e\n")
        self.assertEqual(caught.exception.number, 4)
        self.assertIn("line 4", str(caught.exception))

    def test_bigListOfManyLines(self) -> None:
        checkList("".join(f"key{i}:value {i}\n" for i in range(200_000)))
