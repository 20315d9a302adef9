"""Bounded load: an ingress replica serves at most `ingress.overload.max_in_flight` completions
at once and answers the next ones at once with 429 (or 503) and `Retry-After`, in the OpenAI
error shape, instead of queueing them in front of engines that are already full.

A completion counts from its arrival until its last byte is sent (a stream until it ends or the
client leaves). Serve's own `max_queued_requests` on the ingress deployment bounds what a proxy
queues when a replica stops taking requests at all (`app.py`).
"""

from __future__ import annotations

import math

from serve_app.config.schema import OverloadConfig
from serve_app.ingress.errors import send_error
from serve_app.observability import metrics

COMPLETION_PATHS = {"/v1/completions", "/v1/chat/completions"}


class AdmissionMiddleware:
    def __init__(self, app, overload: OverloadConfig):
        self.app, self.overload = app, overload
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in COMPLETION_PATHS:
            return await self.app(scope, receive, send)
        limit = self.overload.max_in_flight
        if self.in_flight >= limit:
            metrics.refused_requests().inc(tags={"status": str(self.overload.status_code)})
            retry_after = str(math.ceil(self.overload.retry_after_s)).encode()
            return await send_error(
                send,
                self.overload.status_code,
                f"this replica is serving its limit of {limit} completions (ingress.overload.max_in_flight); "
                f"retry after {self.overload.retry_after_s:g} s",
                "RateLimitError" if self.overload.status_code == 429 else "ServiceUnavailableError",
                [(b"retry-after", retry_after)],
            )
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
