"""Operator commands: ``run``, ``config check``, ``demo`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import _args

RAW = argparse.RawDescriptionHelpFormatter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run", formatter_class=RAW,
        help="run the rings, engines and snapshots a configuration declares",
        description="Bring up what CONFIG declares (rings, replicas and their engines, "
                    "snapshot schedules), keep it running, restart engines that die, and "
                    "stop cleanly on SIGINT/SIGTERM (final sync, final snapshot).",
        epilog="example:\n  pyshm run examples/pyshm.yaml\n"
               "  pyshm stats          # in another terminal")
    p.add_argument("config", help="YAML configuration file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override the configuration's log_level")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "config", formatter_class=RAW, help="validate a configuration file",
        description="Configuration tools.",
        epilog="example:\n  pyshm config check examples/pyshm.yaml")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    c = csub.add_parser(
        "check", formatter_class=RAW, help="validate a configuration and report every problem",
        description="Validate FILE: unknown keys, wrong types, impossible sizes, duplicate "
                    "names, and (unless --no-resources) whether the machine has room for "
                    "the segments. Exit status 0 when valid, 1 otherwise.",
        epilog="example:\n  pyshm config check examples/pyshm.yaml\n"
               "  pyshm config check --json my.yaml | jq .problems")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument("--no-resources", action="store_true",
                   help="check the file only, not the free space for its segments")
    c.set_defaults(func=cmd_config_check)
    config_parser = p  # bound now: `p` is reused for the next commands
    p.set_defaults(func=lambda _args: (config_parser.print_help(), 2)[1])

    p = sub.add_parser(
        "demo", formatter_class=RAW,
        help="market-data demo: replicate, snapshot, kill -9, restore, verify",
        description="Runs the embedded demo configuration: a tick producer, two consumers "
                    "(top-of-book strategy, logger), continuous replication, periodic "
                    "snapshots, a kill -9 of the producer, a restore, the producer resuming, "
                    "and a verified summary. Finishes by itself (about 20 s by default).",
        epilog="example:\n  pyshm demo\n  pyshm demo --duration 3 --rate 50000 --json")
    p.add_argument("--config", help="a demo configuration to use instead of the embedded one")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of publishing before and after the crash (default 8 + 8)")
    p.add_argument("--rate", type=float, default=None,
                   help="ticks per second the producer aims for (default 200000)")
    p.add_argument("--instruments", type=int, default=None, help="number of instruments")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout (progress stays on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--workdir", help="directory for images and logs (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep rings, replica and images")
    p.add_argument("--far", action="store_true",
                   help="instead: a far ring fed over a local NATS JetStream server, both "
                        "bridges killed with SIGKILL midway, verified and promoted (needs "
                        "the nats extra; about 15 s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "stats", formatter_class=RAW,
        help="live view of rings, consumers, engines and snapshots",
        description="Shows every ring in /dev/shm (or the RINGs named): positions, rates, "
                    "consumers and their lag, the producer, and, from the status files of "
                    "running supervisors, engine lag, overruns, restarts and the last "
                    "snapshot. --serve exposes the same figures as Prometheus metrics.",
        epilog="examples:\n  pyshm stats                      # refresh every second\n"
               "  pyshm stats md --json            # one sample for scripts\n"
               "  pyshm stats --serve 127.0.0.1:9464 --quiet   # Prometheus endpoint\n\n"
               "Exit status 1 when a ring cannot be read (missing or damaged), as for "
               "`pyshm info`.")
    p.add_argument("rings", nargs="*", metavar="RING")
    p.add_argument("--json", action="store_true", help="print one sample as JSON and exit")
    p.add_argument("--once", action="store_true", help="print one sample and exit")
    p.add_argument("--interval", type=_args.seconds, default=1.0,
                   help="refresh period and rate window in seconds (default 1)")
    p.add_argument("--serve", metavar="HOST:PORT", type=_args.listen,
                   help="serve /metrics for Prometheus")
    p.add_argument("--quiet", action="store_true", help="with --serve: no live view")
    p.add_argument("--state-dir", help="supervisors' status directory "
                   "(default $PYSHM_STATE_DIR or /tmp/pyshm-UID)")
    p.set_defaults(func=cmd_stats)


def cmd_config_check(args: argparse.Namespace) -> int:
    from ..config import check_resources, load_config
    from ..errors import ConfigError

    try:
        cfg = load_config(args.file)
        problems = [] if args.no_resources else check_resources(cfg)
    except ConfigError as exc:
        cfg, problems = None, exc.problems
    if args.json:
        out: dict[str, Any] = {"file": args.file, "valid": not problems, "problems": problems}
        if cfg is not None:
            out["rings"] = [r.name for r in cfg.rings]
        print(json.dumps(out, indent=2))
    elif problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
    else:
        assert cfg is not None
        states = (f"; {len(cfg.states)} state region(s): "
                  f"{', '.join(s.name for s in cfg.states)}" if cfg.states else "")
        print(f"{args.file}: valid ({len(cfg.rings)} ring(s): "
              f"{', '.join(r.name for r in cfg.rings)}{states})")
    return 1 if problems else 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..supervisor import Supervisor

    cfg = load_config(args.config)
    return Supervisor(cfg, log_level=args.log_level).run()


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    if args.far:
        from ..bridge.demo import run_far_demo

        far = run_far_demo(duration=args.duration or 6.0, rate=args.rate or 20_000.0,
                           quiet=args.quiet, workdir=args.workdir)
        if args.json:
            print(json.dumps(far, indent=2))
        return 0 if far.get("verified") else 1

    summary = run_demo(config=args.config, duration=args.duration, rate=args.rate,
                       instruments=args.instruments, workdir=args.workdir, keep=args.keep,
                       quiet=args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0 if summary.get("verified") else 1


def _sample_status(sample: dict[str, Any], names: list[str] | None) -> int:
    """1 when a ring of the sample could not be read (missing, damaged), else 0. Rings
    the user named get their error on stderr too, as `pyshm info` gives it."""
    bad = [r for r in sample.get("rings", {}).values() if "error" in r]
    for r in bad:
        if names and r.get("name") in names:
            print(f"pyshm stats: error: {r['error']}", file=sys.stderr)
    return 1 if bad else 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..stats import collect, render, serve_metrics

    names = args.rings or None
    server = None
    if args.serve:
        server = serve_metrics(args.serve, names, args.state_dir)
        host, port = server.server_address[:2]
        print(f"serving Prometheus metrics on http://{host}:{port}/metrics", file=sys.stderr,
              flush=True)
    try:
        if args.json or args.once:
            first = collect(names, args.state_dir)
            time.sleep(min(args.interval, 0.5))  # a short window is enough for rates
            sample = collect(names, args.state_dir, previous=first)
            print(json.dumps(sample, indent=2) if args.json else render(sample))
            return _sample_status(sample, names)
        prev = None
        while True:
            sample = collect(names, args.state_dir, previous=prev)
            if prev is None and names and server is None and _sample_status(sample, names):
                return 1  # the rings asked for cannot be read: said once, like `pyshm info`
            prev = sample
            if not args.quiet:
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(time.strftime("%H:%M:%S"), "pyshm stats (Ctrl-C to stop)")
                print(render(sample), flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.shutdown()
