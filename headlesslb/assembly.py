"""The option types under the name the API reference first gave them.

They live in :mod:`headlesslb.options`; this module only keeps ``from headlesslb.assembly import
ClientOptions`` (and the other three) working for code written against that page.
"""

from .options import BodyRequestArgs, ClientOptions, RequestArgs, TransportOptions

__all__ = ["BodyRequestArgs", "ClientOptions", "RequestArgs", "TransportOptions"]
