"""`parley` — the process interface (DESIGN.md): up, edge, worker <kind>."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from shared.config import ENGINE_SETS, Settings
from shared import telemetry
from shared.process import setup_logging
from shared.subjects import WORKER_KINDS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats-url", help="NATS server URL(s), comma-separated (env NATS_URL)")
    parser.add_argument("--redis-url", help="Redis URL for shared session state (env REDIS_URL)")
    parser.add_argument("--engines", choices=ENGINE_SETS, help="engine set (env PARLEY_ENGINES)")
    parser.add_argument("--prefix", help="subject prefix (env PARLEY_PREFIX, default parley)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING… (env PARLEY_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Realtime voice pipeline over NATS")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080)
    _common(up)

    edge = commands.add_parser("edge", help="run one edge (WebSocket) process")
    edge.add_argument("--host", default="127.0.0.1")
    edge.add_argument("--port", type=int, default=8080)
    _common(edge)

    worker = commands.add_parser("worker", help="run one worker process")
    worker.add_argument("kind", choices=WORKER_KINDS)
    worker.add_argument("--metrics-port", type=int, help="Prometheus port (env PARLEY_METRICS_PORT; 0 = free)")
    _common(worker)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        nats_url=args.nats_url,
        redis_url=args.redis_url,
        engines=args.engines,
        prefix=args.prefix,
        log_level=args.log_level,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        metrics_port=getattr(args, "metrics_port", None),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    match args.command:
        case "up":
            from services import up

            return up.run(settings, nats_url_given=bool(args.nats_url or _env_nats()))
        case "edge":
            from services.edge import server

            telemetry.setup_tracing("parley-edge")
            asyncio.run(server.main(settings))
        case "worker":
            module = importlib.import_module(f"services.{args.kind}.worker")
            telemetry.setup_tracing(f"parley-{args.kind}")
            asyncio.run(module.main(settings))
    telemetry.shutdown_tracing()  # the spans still queued go out before the process ends
    return 0


def _env_nats() -> bool:
    import os

    return bool(os.environ.get("NATS_URL"))


if __name__ == "__main__":
    sys.exit(main())
