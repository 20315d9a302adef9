"""Ray Serve application serving LLMs with speculative decoding.

Folders, one concern each: `config` (the validated schema behind `serve run`), `ingress`
(OpenAI HTTP front door that picks a target pool per request), `target` (the vLLM target
deployments), `observability` (Prometheus metrics).
"""
