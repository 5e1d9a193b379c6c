"""`python -m webhook --config FILE`: the admission webhook alone, until SIGTERM or SIGINT.

A stand-in until the composition root runs `serve_webhook` (`slurm-bridge webhook`); tests and the
benchmark start it this way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from bridge.config import load_config
from kube_client import KubeClient
from webhook.ca_bundle import update_ca_bundles
from webhook.namespaces import NamespaceLabelCache, needs_namespace_labels
from webhook.server import serve_webhook


async def _main(config_path: Path | None) -> None:
    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    name = config.webhook.registration_name
    if not needs_namespace_labels(config) and name is None:
        await serve_webhook(config, stop)
        return
    kube = await KubeClient.connect(config.kubernetes.kubeconfig)

    async def ca_rotated(ca_pem: bytes) -> None:
        if name is not None:
            await update_ca_bundles(kube, name, ca_pem)

    try:
        labels = NamespaceLabelCache(kube).labels if needs_namespace_labels(config) else None
        await serve_webhook(config, stop, namespace_labels=labels, on_ca_rotated=ca_rotated)
    finally:
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m webhook", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="bridge config file (YAML)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args.config))


if __name__ == "__main__":
    main()
