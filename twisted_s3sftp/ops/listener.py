"""
Listening services that say where they listen (with C{tcp:0} the log is
the only way to learn the port), and tell their factory which port they
opened.
"""

from __future__ import annotations

from typing import Any

from attrs import define
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()


@implementer(IStreamServerEndpoint)
@define
class AnnouncedEndpoint:
    """
    An endpoint that logs the address it is bound to, as
    C{"<what> listening on <host>:<port> (<description>)"}.
    """

    endpoint: IStreamServerEndpoint
    description: str
    what: str

    def listen(self, factory: Any) -> Any:
        def announce(port: IListeningPort) -> IListeningPort:
            address = port.getHost()
            log.info(
                "{what} listening on {host}:{port} ({description})",
                what=self.what,
                host=getattr(address, "host", "?"),
                port=getattr(address, "port", "?"),
                description=self.description,
            )
            # A factory that pauses accepting at its connection cap needs
            # its ports.
            portListening = getattr(factory, "portListening", None)
            if portListening is not None:
                portListening(port)
            return port

        return self.endpoint.listen(factory).addCallback(announce)


def listeningService(
    reactor: Any,
    description: str,
    factory: Any,
    what: str,
    endpoint: IStreamServerEndpoint | None = None,
) -> StreamServerEndpointService:
    """
    @param endpoint: the endpoint, if not the one C{description} names
        (then only what the log says).
    @return: a service listening on the endpoint C{description} with
        C{factory}, announcing its address, and failing at start-up (e.g.
        address in use) rather than logging and idling.
    """
    announced = AnnouncedEndpoint(
        endpoint or serverFromString(reactor, description), description, what
    )
    service = StreamServerEndpointService(announced, factory)
    service._raiseSynchronously = True
    return service
