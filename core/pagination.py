"""The API's pages: a client may ask for a page size up to a limit, and a size over it
is refused with 400 saying the limit, rather than quietly cut down to it."""

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

MAX_PAGE_SIZE = 500


class _StrictPageSize:
    page_size: int | None  # DRF's pagination class sets it, from PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int | None:
        asked = request.query_params.get(self.page_size_query_param)
        if asked is None:
            return self.page_size
        if not asked.isdigit() or not 1 <= int(asked) <= self.max_page_size:
            raise ValidationError(
                {
                    self.page_size_query_param: [
                        f"Give a page size from 1 to {self.max_page_size}; "
                        f"got {asked!r}."
                    ]
                }
            )
        return int(asked)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)  # type: ignore[misc]
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] |= {"minimum": 1, "maximum": self.max_page_size}
        return parameters


class PagePagination(_StrictPageSize, pagination.PageNumberPagination):
    """Numbered pages (`?page=2`), for lists that stay small: teams, projects."""


class CursorPagination(_StrictPageSize, pagination.CursorPagination):
    """Opaque cursors (`next`, `previous`), for lists as long as the cost records: a
    page deep in them costs what the first one does, and rows added meanwhile never
    shift a page."""
