"""The async request-path shell: :class:`~headlesslb.aio.transport.HeadlessTransport`
(``httpx.AsyncBaseTransport``) and :class:`~headlesslb.aio.client.HeadlessClient`, exported at
the package's top level."""
