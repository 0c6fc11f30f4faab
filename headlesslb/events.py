"""The public event API: subscribe an observer to a client's events (see docs/observability.md).

Pass ``observers=[fn]`` to any client or transport, or call ``transport.events.subscribe(fn)``;
``fn(event)`` then receives the typed records defined in :mod:`headlesslb.core.events`, all
re-exported here.
"""

from .core import events as _events
from .core.events import *  # noqa: F403

__all__ = list(_events.__all__)
