"""The bridge's admission webhook: pure admission logic (admission.py), certificates (certs.py), the TLS
server (server.py) and the webhook configurations to register (registration.py).

`webhook.entry.run_webhook(config, stop, kube)` is the entry the composition root runs (`slurm-bridge
webhook`, and inside `run` when `webhook.enabled`); it wraps `webhook.server.serve_webhook(config, stop)`.
This package's __init__ imports nothing, so bridge/config.py can embed `webhook.config.WebhookConfig`
without an import cycle.
"""
