"""headlesslb for httpx2: ``from headlesslb.httpx2 import HeadlessClient, HeadlessTransport``.

The same clients and transports as :mod:`headlesslb` (async) and :mod:`headlesslb.sync`
(blocking, in :mod:`headlesslb.httpx2.sync`), with the same names and arguments, for httpx2,
pydantic's continuation of httpx that the OpenAI, Anthropic and MCP SDKs require: the
transports are ``httpx2.AsyncBaseTransport`` / ``httpx2.BaseTransport`` over httpcore2
connection pools, and a request sent through them touches no httpx class (only a failure does:
headlesslb's errors are httpx's, and each is raised as an httpx2 error too). Named after the
library it serves, as integrations are (``sentry_sdk.integrations.httpx``), so that switching
is one import line. Install it with ``pip install 'headlesslb[httpx2]'``.

Generated from the httpx shell by ``tools/unasync.py`` (see :mod:`headlesslb.io.flavours`).
"""

from .client import HeadlessClient
from .transport import HeadlessTransport

__all__ = ["HeadlessClient", "HeadlessTransport"]
