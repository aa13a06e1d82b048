"""A function's result kept per distinct argument.

Billing exports repeat the same few values on every line: one month of hourly data
names the same accounts, services, regions, SKUs, resources, tags and hours again and
again. Reading, checking and formatting each distinct value once, instead of once per
line, is most of what makes a million-row import fast.
"""

from collections.abc import Callable, Hashable
from typing import Any

# Enough for every distinct value of a column in a large export; a column of unique
# values (a line description with a request id) costs a clear now and then, not memory.
MEMO_LIMIT = 50_000


class Memo(dict):
    """`memo[value]` is `function(value)`, computed on first use. A dict, so that the
    lookup of a value seen before runs in C (`map(memo.__getitem__, values)`)."""

    def __init__(self, function: Callable[[Any], Any], limit: int = MEMO_LIMIT) -> None:
        super().__init__()
        self.function, self.limit = function, limit

    def __missing__(self, key: Hashable) -> Any:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value = self.function(key)
        return value
