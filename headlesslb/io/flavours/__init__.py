"""What differs between the HTTP libraries headlesslb serves, beyond their names: one module per
library (:mod:`.httpx`, :mod:`.httpx2`), with the same names, which the generated shells import
(``tools/unasync.py`` rewrites ``httpx`` to ``httpx2`` in them, this import included)."""
