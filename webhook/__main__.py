"""`python -m webhook --config FILE`: the admission webhook alone, until SIGTERM or SIGINT.

A stand-in until the composition root runs `run_webhook` (`slurm-bridge webhook`); tests and the
benchmark start it this way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from bridge.config import load_config
from webhook.entry import run_webhook


async def _main(config_path: Path | None) -> None:
    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_webhook(config, stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m webhook", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="bridge config file (YAML)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args.config))


if __name__ == "__main__":
    main()
