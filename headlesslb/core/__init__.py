"""The pure core: endpoint model, pool, pickers, retry decisions and budget, the call core.

Deterministic code with an injected clock and random source; no I/O and no I/O library, directly
or through anything it imports (``tests/unit/test_architecture.py`` checks this transitively).
The shells (:mod:`headlesslb.aio`, :mod:`headlesslb.sync`) and the shared async I/O
(:mod:`headlesslb.io`) drive it.
"""
