"""The async I/O both clients share: DNS discovery, the refresh loop, health probes, the lookups
a request may need, the per-Pod async sender, and the client-owned background tasks.

The async client runs these on its own event loop; the sync client runs them on a private loop in
one background thread (:class:`headlesslb.io.runtime.Runtime`).
"""
