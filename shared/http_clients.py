"""Connection pooling: one `httpx.AsyncClient` per vendor per worker process."""

from __future__ import annotations

import httpx


class HttpClients:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._clients: dict[str, httpx.AsyncClient] = {}

    def get(self, vendor: str) -> httpx.AsyncClient:
        if vendor not in self._clients:
            self._clients[vendor] = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
        return self._clients[vendor]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
