"""JSON exports, plain or gzip: newline-delimited objects (what `bq extract` writes),
or one document (a provider API's page, or a list of pages, saved as it came).

Numbers are read straight into Decimal, never through a float, so an amount keeps
every digit the provider wrote.
"""

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.importers.base import (
    MAX_HEADER_CHARS,
    TOO_DEEP,
    ExportFile,
    ImportFailure,
)
from billing.importers.http import Node

JSON_STARTS = ("{", "[")
# A document is parsed whole, at about ten times its size in memory: a provider's
# saved answer is a few megabytes; a large export is newline-delimited.
MAX_DOCUMENT_CHARS = 64 << 20


class JsonFile(ExportFile):
    def is_json(self) -> bool:
        """Whether the text starts as JSON does (an object or a list)."""
        with self._named_errors(), self.open() as text:
            return text.read(64).lstrip().startswith(JSON_STARTS)

    def first_keys(self) -> list[str]:
        """The keys of the first object: the first line's, for newline-delimited
        JSON; else the document's, or its first item's when it is a list."""
        first = self._first_line_object()
        if first is None:
            document = self.document()
            first = document[0] if isinstance(document, list) and document else document
        return list(first) if isinstance(first, dict) else []

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(number, object) for each object of newline-delimited JSON, numbered by
        line, or of a document that is a list of objects, numbered from 1."""
        if self._first_line_object() is not None:
            yield from self._lines()
            return
        document = self.document()
        if not isinstance(document, list):
            raise ImportFailure(
                "is neither newline-delimited JSON nor a list of objects",
                file=self.path.name,
            )
        for number, value in enumerate(document, start=1):
            if not isinstance(value, dict):
                raise ImportFailure(
                    "is not a JSON object", file=self.path.name, row=number
                )
            yield number, value

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._named_errors() as position, self.open() as text:
            for number, line in enumerate(self.text_lines(text), start=1):
                position.row = number
                if not line.strip():
                    continue
                value = self._parsed(line, row=number)
                if not isinstance(value, dict):
                    raise ImportFailure(
                        "is not a JSON object", file=self.path.name, row=number
                    )
                yield number, value

    def document(self) -> Any:
        """The whole file as one JSON value."""
        chunks, size = [], 0
        with self._named_errors(), self.open() as text:
            # By the megabyte: read(MAX_DOCUMENT_CHARS) would reserve all of it.
            while chunk := text.read(1 << 20):
                size += len(chunk)
                if size > MAX_DOCUMENT_CHARS:
                    raise ImportFailure(
                        f"is one JSON document of over {MAX_DOCUMENT_CHARS:,} "
                        "characters: export large data as newline-delimited JSON, "
                        "one object a line",
                        file=self.path.name,
                    )
                chunks.append(chunk)
        return self._parsed("".join(chunks))

    def _first_line_object(self) -> dict[str, Any] | None:
        with self._named_errors(), self.open() as text:
            line = text.readline(MAX_HEADER_CHARS + 1)
        if len(line) > MAX_HEADER_CHARS:
            return None  # not a line of newline-delimited JSON: read as a document
        try:
            value = json.loads(line, parse_float=Decimal)
        except ValueError:
            return None  # the first line of a document written over several
        except RecursionError:
            raise ImportFailure(TOO_DEEP, file=self.path.name, row=1) from None
        return value if isinstance(value, dict) else None

    def _parsed(self, text: str, row: int | None = None) -> Any:
        try:
            return json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            line = exc.lineno if row is None else row
            raise ImportFailure(
                f"is not valid JSON ({exc.msg}, character {exc.colno})",
                file=self.path.name,
                row=line,
            ) from None
        except RecursionError:
            raise ImportFailure(TOO_DEEP, file=self.path.name, row=row) from None


def saved_pages(path: Path) -> list[Node]:
    """The pages of a list endpoint's answer saved to a file: one page, or a list of
    pages, as the API returned them. Refused when the last page says more follow:
    the file would hold part of the costs, and importing it would drop the rest."""
    document = JsonFile(path).document()
    values = document if isinstance(document, list) else [document]
    pages = [
        Node(value, "", f"{path.name} page {number}" if len(values) > 1 else path.name)
        for number, value in enumerate(values, start=1)
    ]
    if pages and pages[-1]["has_more"].flag():
        raise pages[-1]["has_more"].fail(
            "is true, but no page follows in the file: save every page of the answer"
        )
    return pages
