"""
Who makes a registration happen: the master's own registry, or, on a
worker, the master over the cluster link.

Both answer the same two commands (L{RegisterAgent}, L{RemoveAgent}); the
C{RegistrationResponders} mixin routes them to the node's registration, so
the control socket and the master's end of the cluster link share them.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.protocols import amp

from ..protocol.agentcommands import AgentNotFound, RegisterAgent, RegistryRefused, RemoveAgent
from .registry import AgentRegistry, RegistryError, UnknownAgent

#: What a worker answers when the master cannot be asked (the issue's words).
MASTER_UNREACHABLE = "agents must be registered in the master node, which is not reachable"


class Registration(Protocol):
    """Makes registry changes happen, wherever the registry is."""

    async def register(self, name: str, ip: str, group: str, force: bool) -> dict[str, Any]: ...

    async def remove(self, agentID: str) -> dict[str, Any]: ...


class MasterRegistration:
    """The master's registry, changed in a thread (it locks and writes files)."""

    def __init__(self, registry: AgentRegistry, runInThread: Callable[..., Deferred] = deferToThread) -> None:
        self.registry = registry
        self.runInThread = runInThread

    async def register(self, name: str, ip: str, group: str, force: bool) -> dict[str, Any]:
        try:
            done = await self.runInThread(self.registry.register, name, ip, group, force)
        except RegistryError as e:
            raise RegistryRefused(str(e)) from None
        except OSError as e:
            raise RegistryRefused(f"cannot change the agent registry: {e.strerror or e}") from None
        return {
            "agent_id": done.agent.id,
            "key": done.agent.exported(),
            "replaced": [f"{old.id} {old.name} {old.ip}" for old in done.replaced],
        }

    async def remove(self, agentID: str) -> dict[str, Any]:
        try:
            agent = await self.runInThread(self.registry.remove, agentID)
        except UnknownAgent as e:
            raise AgentNotFound(str(e)) from None
        except RegistryError as e:
            raise RegistryRefused(str(e)) from None
        except OSError as e:
            raise RegistryRefused(f"cannot change the agent registry: {e.strerror or e}") from None
        return {"agent_id": agent.id, "name": agent.name, "ip": agent.ip}


class ForwardedRegistration:
    """A worker's registrations: asked of the master over the cluster link."""

    def __init__(self, connectionToMaster: Callable[[], Any]) -> None:
        self.connectionToMaster = connectionToMaster

    async def _ask(self, command: type[amp.Command], **arguments: Any) -> dict[str, Any]:
        connection = self.connectionToMaster()
        if connection is None:
            raise RegistryRefused(MASTER_UNREACHABLE)
        try:
            return await connection.callRemote(command, **arguments)
        except RegistryRefused:
            raise
        except Exception:
            raise RegistryRefused(MASTER_UNREACHABLE) from None

    async def register(self, name: str, ip: str, group: str, force: bool) -> dict[str, Any]:
        return await self._ask(RegisterAgent, name=name, ip=ip, group=group, force=force)

    async def remove(self, agentID: str) -> dict[str, Any]:
        return await self._ask(RemoveAgent, agent_id=agentID)


class RegistrationResponders(amp.CommandLocator):
    """
    Mixin for an AMP protocol with a L{Registration} in
    C{self.registration} (or None: it takes no registrations).
    """

    registration: Registration | None = None

    def _registration(self) -> Registration:
        if self.registration is None:
            raise RegistryRefused("this node does not take agent registrations")
        return self.registration

    @RegisterAgent.responder
    def _registerAgent(self, name: str, ip: str, group: str, force: bool) -> Deferred:
        return Deferred.fromCoroutine(self._registration().register(name, ip, group, force))

    @RemoveAgent.responder
    def _removeAgent(self, agent_id: str) -> Deferred:
        return Deferred.fromCoroutine(self._registration().remove(agent_id))
