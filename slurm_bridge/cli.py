"""The `slurm-bridge` command.

    slurm-bridge explain -f pod.yaml [--config FILE]    what Slurm job the manifest's pods would become
    slurm-bridge scheduler | controller | exporter | webhook   run one component
    slurm-bridge run [--components a,b]                  run several components in one process

Exit status: 0 success; 1 a pod cannot be translated; 2 bad usage, configuration or manifest, or a
configuration this Slurm cannot honour; 3 the leader lost its Lease (slurm_bridge/exits.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bridge.config import BridgeConfig, ConfigError, load_config
from bridge.explain import ManifestError, explain_manifests, render

COMPONENTS = ("scheduler", "controller", "exporter", "webhook")
# `run` without --components: these, plus the webhook when `webhook.enabled` is set.
DEFAULT_RUN = ("scheduler", "controller", "exporter")
CONFIG_PATH_VARIABLE = "SLURM_BRIDGE_CONFIG"
_RUNNER_MODULE = "slurm_bridge.app"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"slurm-bridge: {exc}", file=sys.stderr)
        return 2
    if args.command == "explain":
        return _explain(args.filename, config, sys.stdin, sys.stdout, sys.stderr)
    components = _components(args, config.webhook.enabled)
    if components is None:
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run_components(config, components)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    default_config = os.environ.get(CONFIG_PATH_VARIABLE)
    common.add_argument(
        "--config",
        type=Path,
        default=Path(default_config) if default_config else None,
        metavar="FILE",
        help=f"YAML config file (default: ${CONFIG_PATH_VARIABLE}); SLURM_BRIDGE_* variables override it",
    )
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    parser = argparse.ArgumentParser(prog="slurm-bridge", description="Let Slurm schedule Kubernetes pods.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explain = commands.add_parser(
        "explain", parents=[common], help="show the Slurm job a manifest's pods would become"
    )
    explain.add_argument("-f", "--filename", required=True, help="manifest file (YAML or JSON); - for stdin")
    for component in COMPONENTS:
        commands.add_parser(component, parents=[common], help=f"run the {component}")
    run = commands.add_parser("run", parents=[common], help="run several components in one process")
    run.add_argument(
        "--components",
        default=None,
        help=f"comma-separated subset of {', '.join(COMPONENTS)} (default: {', '.join(DEFAULT_RUN)},"
        " and webhook when webhook.enabled)",
    )
    return parser


def _explain(filename: str, config: BridgeConfig, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    try:
        text = stdin.read() if filename == "-" else Path(filename).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"slurm-bridge: cannot read {filename}: {exc.strerror or exc}", file=stderr)
        return 2
    try:
        explanation = explain_manifests(text, config)
    except ManifestError as exc:
        print(f"slurm-bridge: {filename}: {exc}", file=stderr)
        return 2
    out, err = render(explanation)
    stdout.write(out)
    stderr.write(err)
    return 0 if explanation.ok else 1


def _components(args: argparse.Namespace, webhook_enabled: bool) -> set[str] | None:
    if args.command != "run":
        return {args.command}
    if args.components is None:
        return set(DEFAULT_RUN) | ({"webhook"} if webhook_enabled else set())
    chosen = {name.strip() for name in str(args.components).split(",") if name.strip()}
    unknown = chosen - set(COMPONENTS)
    if unknown or not chosen:
        print(f"slurm-bridge: --components takes a subset of {', '.join(COMPONENTS)}", file=sys.stderr)
        return None
    return chosen


def _run_components(config: BridgeConfig, components: set[str]) -> int:
    # Imported late: explain must not pay for (or depend on) the clients and loops of the runtime.
    try:
        runner = importlib.import_module(_RUNNER_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _RUNNER_MODULE:
            raise
        print(f"slurm-bridge: {', '.join(sorted(components))}: not available in this build", file=sys.stderr)
        return 2
    return int(runner.run(config, components))


if __name__ == "__main__":
    sys.exit(main())
