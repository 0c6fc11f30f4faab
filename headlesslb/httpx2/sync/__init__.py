"""The blocking API for httpx2: ``from headlesslb.httpx2.sync import HeadlessClient,
HeadlessTransport`` (:mod:`headlesslb.sync`'s, over httpx2's ``Client`` and httpcore2)."""

from .client import HeadlessClient
from .transport import HeadlessTransport

__all__ = ["HeadlessClient", "HeadlessTransport"]
