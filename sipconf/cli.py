"""Command line: ``sipconf serve`` and ``sipconf check-config`` (SPEC section 2)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from typing import Callable

from . import __version__
from .config import Config, ConfigError, demo_config, load_config, with_overrides
from .wording import plural

EXIT_CONFIG = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipconf", description="SIP/RTP conference bridge")
    parser.add_argument("--version", action="version", version=f"sipconf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (default: the built-in demo)")
    serve.add_argument("--bind", metavar="ADDR", help="address of the SIP and RTP sockets")
    serve.add_argument("--sip-port", metavar="N", type=int, help="SIP port (UDP and TCP)")
    serve.add_argument("--rtp-ports", metavar="LO-HI", help="RTP port range, inclusive")
    # type= runs before the choices check: any case is accepted, and --help
    # and argparse's "invalid choice" message list the canonical spellings.
    serve.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                       help="log verbosity, any case (default: INFO)")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", metavar="FILE")
    return parser


def _report(error: ConfigError) -> int:
    print("invalid configuration:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        try:
            config = load_config(args.file)
        except ConfigError as error:
            return _report(error)
        print(config.summary())
        return 0
    # The command-line flags win over the file, at start and at every reload.
    overrides = dict(bind=args.bind, sip_port=args.sip_port, rtp_ports=args.rtp_ports)

    def read_config() -> Config:
        return with_overrides(load_config(args.config), **overrides)

    try:
        config = read_config() if args.config else with_overrides(demo_config(), **overrides)
    except ConfigError as error:
        return _report(error)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _warn_unroutable(config)
    return _serve(config, read_config if args.config else None, args.config)


def _warn_unroutable(config: Config) -> None:
    """A valid configuration that routes no call (an empty file) starts, but says so."""
    for warning in config.routing_warnings():
        logging.getLogger("sipconf").warning("configuration: %s", warning)


def _raise_file_limit() -> None:
    """Every call holds three sockets (RTP, its connected twin, RTCP) and
    each phone on TCP/TLS one more: a shell's default soft limit of 1,024
    descriptors would cap a server at about 300 calls, so the soft limit is
    raised to the hard one (as servers commonly do)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep what we have
        pass


def _serve(config: Config, read_config: Callable[[], Config] | None = None, path: str | None = None) -> int:
    _raise_file_limit()
    try:
        import uvloop  # optional: 10-20% less CPU on the media path
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(_serve_until_signal(config, read_config, path))
    except OSError as error:
        logging.getLogger("sipconf").error("cannot start: %s", error)
        return 1


def _reload(server, read_config: Callable[[], Config] | None, path: str | None) -> None:
    """SIGHUP: read the --config file again (same command-line overrides) and
    apply it; an invalid file changes nothing and every problem is logged."""
    log = logging.getLogger("sipconf")
    if read_config is None:
        log.info("SIGHUP: no --config file (built-in demo configuration): nothing to reload")
        return
    log.info("SIGHUP: reloading %s", path)
    try:
        config = read_config()
    except ConfigError as error:
        log.error("configuration reload refused, %s is invalid (%s); keeping the running configuration",
                  path, plural(len(error.problems), "problem"))
        for problem in error.problems:
            log.error("  %s", problem)
        return
    try:
        server.reload(config)
    except Exception:
        log.exception("configuration reload failed")
        return
    _warn_unroutable(config)


async def _serve_until_signal(config: Config, read_config: Callable[[], Config] | None = None,
                              path: str | None = None) -> int:
    from .memtrace import install as install_memtrace
    from .server import SipServer

    install_memtrace(asyncio.get_running_loop())  # SIPCONF_TRACEMALLOC=N: snapshots on SIGUSR2
    server = SipServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The handlers go in before the transport starts: the server counts as
    # ready from its first answer to OPTIONS (SPEC 2), and a SIGTERM from that
    # moment on must end in the graceful shutdown, not the default kill. A
    # signal during start-up is acted on once start() returns.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, server, read_config, path)
    await server.start()
    # Everything made at start-up (config, prompts, tables) lives as long as
    # the process: keep it out of the garbage collector's full scans, which
    # otherwise stall a mixer tick now and then.
    gc.collect()
    gc.freeze()
    await stop.wait()
    logging.getLogger("sipconf").info("shutting down: %s to end", plural(len(server.calls), "call"))
    await server.shutdown()
    return 0
