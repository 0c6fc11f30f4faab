"""The TLS context a client's connections use, made from its ``verify=`` and ``cert=``.

headlesslb takes ``verify`` and ``cert`` as httpx always has (a CA bundle path, a bool or an
``ssl.SSLContext``; a certificate path or a (cert, key[, password]) tuple). httpx 0.28 deprecated
the path and ``cert=`` forms in its own ``create_ssl_context``, with one ``DeprecationWarning``
per context made, and a client makes several (its Pods' connections, its probes', requests to
other hosts): the user saw httpx's warning twice for an argument of ours that is not deprecated.
This builds the same context as httpx does, from the same values, without the warnings; the
httpx2 flavour passes httpx2's ``create_ssl_context``, whose default trust store is httpx2's.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["tls_context"]


def tls_context(
    verify: ssl.SSLContext | str | bool,
    cert: Any = None,
    create: Callable[..., ssl.SSLContext] = httpx.create_ssl_context,
) -> ssl.SSLContext:
    """The context for ``verify`` (``True``: the library's default trust store, made by its
    ``create`` (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured); ``False``: no verification; a
    path: that CA bundle or directory; a context: that one), with ``cert``'s client certificate
    chain loaded into it."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        else:
            context = ssl.create_default_context(cafile=verify)
    else:
        context = create(verify=verify)  # a bool or a context: no warning
    if cert:
        if isinstance(cert, str):
            context.load_cert_chain(cert)
        else:
            context.load_cert_chain(*cert)
    return context
