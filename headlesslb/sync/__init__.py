"""The blocking API: ``from headlesslb.sync import HeadlessClient, HeadlessTransport``.

Named as redis-py names its twins (``redis.Redis`` / ``redis.asyncio.Redis``): the same class
names in both flavours, so switching is one import line. The async flavour is the package's top
level (``headlesslb.HeadlessClient``), the blocking one lives here. Both drive the same pure call
core (:mod:`headlesslb.core.call`).
"""

from .client import HeadlessClient
from .transport import HeadlessTransport

__all__ = ["HeadlessClient", "HeadlessTransport"]
