"""The order in which aliases are tried for one request."""

from __future__ import annotations

from gatewayd.routing.table import RoutingTable


class FallbackChain:
    """The requested alias, then its fallbacks in order; a context-window error
    switches what follows to the ``context_window_fallbacks``.

    A fallback's own fallbacks are not followed: the chain is the primary's.
    """

    def __init__(self, table: RoutingTable, alias: str) -> None:
        self._table = table
        self.primary = alias
        self._aliases = [alias, *table.fallbacks_for(alias)]
        self._index = 0
        self._switched = False

    @property
    def current(self) -> str:
        return self._aliases[self._index]

    def has_next(self) -> bool:
        return self._index + 1 < len(self._aliases)

    def advance(self) -> bool:
        """Move to the next alias; False when the chain is exhausted."""
        self._index += 1
        return self._index < len(self._aliases)

    def switch_to_context_window(self) -> bool:
        """Replace the rest of the chain by the context-window fallbacks (once).

        False when there are none to try: the error goes back to the client.
        """
        if self._switched:
            return self.has_next()
        self._switched = True
        tried = set(self._aliases[: self._index + 1])
        rest = [a for a in self._table.context_window_fallbacks_for(self.primary) if a not in tried]
        self._aliases = self._aliases[: self._index + 1] + rest
        return bool(rest)
