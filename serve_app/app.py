"""`serve run` entry point: `import_path: serve_app.app:build_app`, `args:` an `AppConfig`."""

# No `from __future__ import annotations` here: Ray Serve validates `args` against the
# builder's annotation only when it is the AppConfig class itself, not a string.
from ray import serve
from ray.serve.deployment import Application
from ray.serve.llm import build_llm_deployment
from ray.serve.llm.ingress import make_fastapi_ingress

from serve_app.config.schema import AppConfig, TunerConfig
from serve_app.draft_worker.server import DraftServer
from serve_app.ingress import errors
from serve_app.ingress.access import AccessMiddleware
from serve_app.ingress.admission import AdmissionMiddleware
from serve_app.ingress.openai_ingress import ENDPOINTS, SpecIngress
from serve_app.llm_configs import build_draft_llm_config, build_llm_config, deployment_name
from serve_app.ray_llm_seam import new_ingress_app, to_model_metadata
from serve_app.target.server import TargetServer
from serve_app.tuner.spec_tuner import SpecTuner


def build_app(args: AppConfig) -> Application:
    """One target deployment per pool, one per draft worker, behind one OpenAI ingress."""
    pools: dict[str, dict[str, Application]] = {}
    cards, llm_configs = {}, []
    # One small replica: it only folds reports and does arithmetic, every few seconds.
    # No access log: every ingress replica asks it for the route table every 2 s.
    tuner = (
        serve.deployment(
            SpecTuner,
            name="spec-tuner",
            num_replicas=1,
            ray_actor_options={"num_cpus": 0.1},
            logging_config={"enable_access_log": False},
        ).bind(args)
        if any(args.tuner_roles().values())
        else None
    )
    # A replica that is scaled down or replaced finishes what it is serving for up to this long.
    grace = {"graceful_shutdown_timeout_s": args.shutdown_grace_s}
    for model in args.models:
        pools[model.id] = {}
        draft_workers = {
            worker.name: build_llm_deployment(
                build_draft_llm_config(model, worker),
                deployment_cls=DraftServer,
                # No access log: targets call it on every drafting step (a line per step per replica).
                override_serve_options={
                    "name": deployment_name("draft", model, worker.name),
                    "logging_config": {"enable_access_log": False},
                    **grace,
                },
            )
            for worker in model.draft_workers
        }
        for pool in model.pools:
            llm_config = build_llm_config(model, pool)
            llm_configs.append(llm_config)
            bind_kwargs = {"pool": pool.name, "method": pool.speculation.method}
            if pool.speculation.draft_worker is not None:
                bind_kwargs.update(
                    draft_worker=draft_workers[pool.speculation.draft_worker],
                    draft_config=model.draft_worker(pool.speculation.draft_worker),
                )
            if (local_draft := pool.speculation.local_draft_source()) is not None:
                bind_kwargs.update(local_draft=local_draft)
            if pool.speculation.tuned():
                bind_kwargs.update(tuner=tuner, tuner_config=pool.speculation.tuner)
            elif pool in model.reporting_pools():
                # For the router's evidence and the acceptance endpoint.
                bind_kwargs.update(tuner=tuner, tuner_config=TunerConfig())
            pools[model.id][pool.name] = build_llm_deployment(
                llm_config,
                deployment_cls=TargetServer,
                bind_kwargs=bind_kwargs,
                override_serve_options={"name": deployment_name("target", model, pool.name), **grace},
            )
        cards[model.id] = to_model_metadata(model.id, llm_configs[-1])

    options = SpecIngress.get_deployment_options(llm_configs)
    options.pop("autoscaling_config", None)
    overload = args.ingress.overload
    options.update(
        num_replicas=args.ingress.num_replicas,
        max_ongoing_requests=args.ingress.max_ongoing_requests,
        max_queued_requests=overload.max_queued_requests,
        backpressure_config={"status_code": overload.status_code, "retry_after_s": overload.retry_after_s},
        ray_actor_options={"num_cpus": 0.5},
        **grace,
    )
    # The last added runs first: access refusals, then overload, never reach body parsing.
    fastapi_app = new_ingress_app()
    errors.install(fastapi_app)
    fastapi_app.add_middleware(AdmissionMiddleware, overload=overload)
    fastapi_app.add_middleware(AccessMiddleware, access=args.ingress.access, max_body_bytes=args.ingress.max_body_bytes)
    ingress = make_fastapi_ingress(SpecIngress, endpoint_map=ENDPOINTS, app=fastapi_app)
    return serve.deployment(ingress, name="ingress", **options).bind(
        llm_deployments={m.id: pools[m.id][m.pool(None).name] for m in args.models},
        model_cards=cards,
        pool_deployments=pools,
        app_config=args,
        tuner=tuner,
    )
