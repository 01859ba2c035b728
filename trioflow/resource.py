"""Resources: values that steps are given besides their events, made by factories.

A step parameter annotated ``Annotated[T, Resource(factory)]`` receives what ``factory`` makes::

    @asynccontextmanager
    async def http_client() -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient() as client:
            yield client

    class Fetch(Workflow):
        @step
        async def fetch(
            self, ev: StartEvent, client: Annotated[httpx.AsyncClient, Resource(http_client)]
        ) -> StopEvent: ...

A factory is called with no arguments, except its own parameters annotated as resources (a
factory may depend on other resources). It may be a plain function or an async one; what it
returns (awaited, for an async one) is entered when it is an async context manager or a context
manager, and its ``__aenter__``/``__enter__`` value is what the step gets; it is exited when the
value's lifetime ends (``enter=False`` passes it on as it is, unentered, as LlamaIndex does).

How long a value lives (and so how widely it is shared):

- ``cache=False``: made for one call of the step (each attempt), exited when the call ends.
- ``cache=True`` (the default), ``scope="run"`` (the default): one value per run, shared by
  every step of the run, made at its first use and exited when the run ends, after its steps.
- ``scope="workflow"``: one value per workflow instance, shared by its runs. One that must be
  exited needs an owner: ``async with workflow.open_resources():`` around the runs; the block's
  end exits it. The names are LlamaIndex's (``workflows.resource``).
"""

from ._resource import Resource, ResourceConfig, Scope

__all__ = ["Resource", "ResourceConfig", "Scope"]
