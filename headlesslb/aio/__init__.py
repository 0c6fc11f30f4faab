"""The async request-path shell: :class:`HeadlessTransport` (``httpx.AsyncBaseTransport``) and
:class:`HeadlessClient`, exported at the package's top level."""
