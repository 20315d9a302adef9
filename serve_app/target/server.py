"""The target pool replica: Ray Serve LLM's `LLMServer` hosting a vLLM `AsyncLLM`."""

from __future__ import annotations

import asyncio

from ray import serve
from ray.serve.llm import LLMConfig, LLMServer

from serve_app.observability.metrics import replica_info

# Ray's metrics agent drops a gauge not set again within two report intervals (10 s each by
# default), so the info gauge is re-set well inside that.
REPLICA_INFO_REFRESH_S = 5.0


class TargetServer(LLMServer):
    """`LLMServer` that also says which pool it serves.

    vLLM's own metrics (exported through Ray) carry only `model_name` and `ReplicaId`; every
    pool of a model shares the model name, so each replica publishes an info gauge mapping its
    ReplicaId to its pool and speculation method (join on ReplicaId in PromQL).
    """

    async def __init__(self, llm_config: LLMConfig, *, pool: str, method: str):
        await super().__init__(llm_config)
        if method == "routed":
            # The routed proposer drafts nothing until it can map batch rows to requests.
            attached = await self.collective_rpc("attach_routed_proposer")
            if not all(attached):
                raise RuntimeError(f"pool {pool}: the routed proposer did not attach in every worker: {attached}")
        replica = serve.get_replica_context().replica_id.unique_id
        self._info_tags = {"model": llm_config.model_id, "pool": pool, "method": method, "ReplicaId": replica}
        self._info_task = asyncio.get_running_loop().create_task(self._publish_replica_info())

    async def _publish_replica_info(self) -> None:
        while True:
            replica_info().set(1, tags=self._info_tags)
            await asyncio.sleep(REPLICA_INFO_REFRESH_S)
