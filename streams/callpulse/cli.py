"""The `callpulse` command: worker, topics create, simulate, validate, replay, report, live adapters, wallboard, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import orjson

from .config import ConfigError, load_config
from .kpi.forecast import ForecastError

# ---- worker ------------------------------------------------------------------------------------

def cmd_worker(args) -> int:
    """Run a Faust worker (two stages, web server with /metrics) against the configured Kafka."""
    from .pipeline.app import app

    sys.argv = [sys.argv[0], "worker", "--loglevel", args.loglevel]
    app.main()
    return 0


# ---- topics ------------------------------------------------------------------------------------

def cmd_topics(args) -> int:
    from .pipeline.topics import create_topics, topic_plan

    config = load_config(args.config)
    created = asyncio.run(create_topics(config))
    for name, n in topic_plan(config).items():
        print(f"{'created' if name in created else 'exists '}  {name}  ({n} partition{'s' if n > 1 else ''})")
    return 0


# ---- simulate ----------------------------------------------------------------------------------

async def publish(config, events, live: bool) -> int:
    """Send events to the events topic. Live: each event is sent when the wall clock reaches its
    time (events already in the past go at once); otherwise as fast as possible."""
    from .pipeline.publish import publish as send
    from .tools.simulator import event_time

    return await send(config, events, send_at=event_time if live else None)


def shift_times(events, seconds: float):
    """The events with `time` moved by `seconds` (a whole number of milliseconds)."""
    from .tools.simulator import event_time, format_time

    for event in events:
        event["time"] = format_time(event_time(event) + seconds)
        yield event


def cmd_simulate(args) -> int:
    from .tools.simulator import simulate

    config = load_config(args.config)
    now = time.time()
    if args.fast:  # history that ends now, sent as fast as the broker takes it
        start = now - args.duration
    else:  # starts `backfill` seconds ago: the past is sent at once, the rest in real time
        start = now - args.backfill
    shift = 0.0
    if args.hour_of_day is not None:  # traffic of that UTC hour, stamped with today's times
        if not 0 <= args.hour_of_day < 24:
            print("callpulse simulate: --hour-of-day must be in [0, 24)", file=sys.stderr)
            return 2
        simulated_start = start // 86400 * 86400 + args.hour_of_day * 3600
        shift = round(start - simulated_start, 3)
        start = simulated_start
    surge = {}
    if args.surge_in is not None:
        surge["surge_start"] = args.surge_in + (now - start - shift)
    if args.surge_duration is not None:
        surge["surge_duration"] = args.surge_duration
    steady = {name: value for name, value in (("calls_per_hour", args.calls_per_hour), ("handle_seconds", args.aht),
                                              ("agents", args.agents), ("patience_seconds", args.patience))
              if value is not None}
    try:
        events = simulate(args.scenario, seed=args.seed, start=start, duration_seconds=args.duration, **surge, **steady)
    except ValueError as exc:  # unknown scenario, a surge moved before the start, ...
        print(f"callpulse simulate: {exc}", file=sys.stderr)
        return 2
    if shift:
        events = shift_times(events, shift)
    try:
        sent = asyncio.run(publish(config, events, live=not args.fast))
    except KeyboardInterrupt:
        return 130
    print(f"sent {sent} events to {config.kafka.topic_events}", file=sys.stderr)
    return 0


# ---- validate ----------------------------------------------------------------------------------

def read_events_file(path: Path) -> list[bytes]:
    """A file of events: one JSON object, a JSON array of objects, or JSON lines."""
    data = path.read_bytes()
    stripped = data.strip()
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return [line for line in data.splitlines() if line.strip()]
    if isinstance(whole, list):
        return [orjson.dumps(item) for item in whole]
    return [stripped]


def cmd_validate(args) -> int:
    from .events import Router

    router = Router(max_future_seconds=float("inf"))
    bad = total = 0
    for path in args.files:
        for n, raw in enumerate(read_events_file(Path(path)), 1):
            total += 1
            event, rejected = router.check(raw)
            if rejected is not None:
                bad += 1
                print(f"{path}:{n}: {rejected.reason}: {rejected.detail}")
    print(f"{total - bad} valid, {bad} invalid")
    return 1 if bad else 0


# ---- replay and report -------------------------------------------------------------------------

def cmd_replay(args) -> int:
    from aiokafka.errors import KafkaError

    from .tools.replay import replay

    if args.speed is not None and args.speed <= 0:
        print("callpulse replay: --speed must be > 0 (leave it out for as fast as possible)", file=sys.stderr)
        return 2
    config = load_config(args.config)
    try:
        replay(config, Path(args.source), args.format, speed=args.speed, source=args.source_name,
               timezone=args.timezone, queues=set(args.queue) or None, dry_run=args.dry_run,
               outbound_queue=args.outbound_queue)
    except (OSError, ValueError, KafkaError) as exc:
        print(f"callpulse replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_report(args) -> int:
    from datetime import date

    from aiokafka.errors import KafkaError

    from .tools.report import ReportError, run

    try:
        since = date.fromisoformat(args.since) if args.since else None
        until = date.fromisoformat(args.until) if args.until else None
    except ValueError as exc:
        print(f"callpulse report: --since/--until take a date like 2026-11-23: {exc}", file=sys.stderr)
        return 2
    if (args.agent or args.days) and not args.agents:
        print("callpulse report: --agent and --days need --agents", file=sys.stderr)
        return 2
    if args.days and args.interval_minutes is not None:
        print("callpulse report: --days selects the day records; --interval-minutes the interval ones (not both)",
              file=sys.stderr)
        return 2
    if args.agents and args.queue:
        print("callpulse report: --queue selects queue records; with --agents use --agent", file=sys.stderr)
        return 2
    config = load_config(args.config)
    # Written to a temporary file first, so a failed read never leaves a cut report behind.
    partial = Path(f"{args.output}.partial") if args.output else None
    out = open(partial, "w", encoding="utf-8", newline="") if partial else sys.stdout
    try:
        n = run(config, fmt=args.format, queues=set(args.queue) or None, minutes=args.interval_minutes,
                since=since, until=until, out=out, agents=args.agents, agent_ids=set(args.agent) or None, days=args.days)
    except (ReportError, KafkaError) as exc:
        print(f"callpulse report: {exc}", file=sys.stderr)
        return 2
    finally:
        if partial:
            out.close()
    if partial:
        partial.replace(args.output)
    print(f"{n} interval record(s)", file=sys.stderr)
    return 0


# ---- live adapters -----------------------------------------------------------------------------

def run_live(config, source, what: str) -> int:
    """Publish a live source's batches until it ends or Ctrl-C / SIGTERM."""
    import logging
    import signal

    from .pipeline.publish import publish_live

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("callpulse")

    logged = [-1]  # the thousand of events logged last (-1: nothing yet)

    def progress(sent: int) -> None:  # called after each batch with the running count
        if sent // 1000 > logged[0]:  # the first batch, then once per thousand
            logged[0] = sent // 1000
            log.info("%s: %d events published", what, sent)

    async def main() -> int:
        task = asyncio.ensure_future(publish_live(config, source.batches(), on_sent=progress))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:  # SIGTERM: a normal stop
            return 0

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    skipped = getattr(source, "skips", None)
    if skipped is not None and skipped.total():
        log.info("%s: skipped %d record(s):\n%s", what, skipped.total(), "\n".join(skipped.lines()))
    return 0


def _secret_from_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise SystemExit(f"callpulse: set the {what} in the environment variable {name} (it is never taken from the command line)")
    if "\r" in value or "\n" in value:  # would end the protocol line early and inject another
        raise SystemExit(f"callpulse: the {what} in {name} contains a line break")
    return value


def cmd_follow(args) -> int:
    from .sources.follow import QueueLogFollower
    from .tools.replay import DEFAULT_SOURCE

    config = load_config(args.config)
    checkpoint = args.checkpoint or str(Path(config.stream.data_dir) / f"{Path(args.path).name}.checkpoint.json")
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    source = QueueLogFollower(args.path, checkpoint, args.source_name or DEFAULT_SOURCE["queue_log"],
                              poll_seconds=args.poll, include_caller=args.include_caller,
                              agent_aliases=dict(_alias(a) for a in args.agent_alias) or None,
                              outbound_queue=args.outbound_queue)
    return run_live(config, source, f"follow {args.path}")


def _alias(text: str) -> tuple[str, str]:
    interface, sep, name = text.partition("=")
    if not sep or not interface or not name:
        raise SystemExit(f"callpulse follow: --agent-alias takes INTERFACE=NAME, e.g. SIP/1001=Sathish; got {text!r}")
    return interface, name


def cmd_ami(args) -> int:
    from .sources.ami import AmiAuthError, AmiSource
    from .tools.replay import DEFAULT_SOURCE

    config = load_config(args.config)
    source = AmiSource(args.host, args.port, args.username, _secret_from_env(args.secret_env, "AMI secret"),
                       args.source_name or DEFAULT_SOURCE["ami"], events=args.events,
                       include_caller=args.include_caller, capture_path=args.record)
    try:
        return run_live(config, source, f"ami {args.host}:{args.port}")
    except AmiAuthError as exc:
        print(f"callpulse ami: {exc}", file=sys.stderr)
        return 1


def cmd_freeswitch(args) -> int:
    from .sources.freeswitch import FreeswitchApiError, FreeswitchAuthError, FreeswitchSource
    from .tools.replay import DEFAULT_SOURCE

    config = load_config(args.config)
    source = FreeswitchSource(args.host, args.port, _secret_from_env(args.password_env, "event socket password"),
                              args.source_name or DEFAULT_SOURCE["freeswitch"], queues=args.queue or None,
                              record_to=args.record)
    try:
        return run_live(config, source, f"freeswitch {args.host}:{args.port}")
    except (FreeswitchAuthError, FreeswitchApiError) as exc:
        print(f"callpulse freeswitch: {exc}", file=sys.stderr)
        return 1


# ---- wallboard and demo ------------------------------------------------------------------------

def cmd_wallboard(args) -> int:
    from .tools.wallboard import run

    run(args.urls, window=args.window, interval=args.interval)
    return 0


def cmd_demo(args) -> int:
    from .tools.demo import run_demo

    return run_demo(args)


# Callback-agent dialplans write OUTDIAL and its result lines with NONE for the queue.
OUTBOUND_QUEUE_HELP = ("the queue whose outbound figures count the dial-out lines that name no queue (OUTDIAL's "
                       "results); left out, their attempts count in no queue (callcenter_events_unrouted_total)")


def build_parser() -> argparse.ArgumentParser:
    from .tools.replay import DEFAULT_SOURCE, FORMATS
    from .tools.simulator import SCENARIOS

    parser = argparse.ArgumentParser(prog="callpulse", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default: $CALLPULSE_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a stream worker against the configured Kafka")
    p.add_argument("--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("topics", help="manage the Kafka topics")
    p.add_argument("action", choices=["create"])
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("simulate", help="publish seeded, realistic call-center traffic")
    p.add_argument("--scenario", default="normal")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=8 * 3600, help="seconds of traffic (default 8 h)")
    p.add_argument("--backfill", type=float, default=900, help="start this many seconds in the past (sent at once)")
    p.add_argument("--fast", action="store_true", help="send --duration seconds of history ending now, as fast as possible")
    p.add_argument("--hour-of-day", type=float, default=None, metavar="H",
                   help="simulate the traffic of this UTC hour of day (0-24), stamped with the current time")
    p.add_argument("--surge-in", type=float, default=None, metavar="SECONDS",
                   help="surge scenario: start the surge this many seconds from now (an alerting drill)")
    p.add_argument("--surge-duration", type=float, default=None, metavar="SECONDS",
                   help="surge scenario: how long the surge lasts (default 1200)")
    p.add_argument("--calls-per-hour", type=float, default=None, metavar="N",
                   help="steady scenario: Poisson arrival rate (default 360)")
    p.add_argument("--aht", type=float, default=None, metavar="SECONDS",
                   help="steady scenario: mean handle time, talk + wrap-up, exponential (default 180)")
    p.add_argument("--agents", type=int, default=None, metavar="N",
                   help="steady scenario: agents logged in and ready throughout (default 20)")
    p.add_argument("--patience", type=float, default=None, metavar="SECONDS",
                   help="steady scenario: mean caller patience, exponential; inf: nobody hangs up (default 120)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="validate events in files against the event schema")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("replay", help="publish the history in a file (queue_log, call records, AMI/ESL capture)")
    p.add_argument("source", help="the file to replay")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="what kind of file it is (default: detected from its first bytes)")
    p.add_argument("--speed", type=float, default=None, metavar="N",
                   help="N x real time (e.g. 60: an hour of history per minute); default: as fast as possible")
    p.add_argument("--source-name", default=None,
                   help="the events' `source`, which their ids derive from: the same as the live adapter's "
                        f"(default by format: {', '.join(f'{k} {v}' for k, v in DEFAULT_SOURCE.items())})")
    p.add_argument("--timezone", default=None, help="time zone of files that hold local times (call records)")
    p.add_argument("--queue", action="append", default=[], help="only the events of this queue (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="read and map the file, print the summary, publish nothing")
    p.add_argument("--outbound-queue", default=None, metavar="QUEUE", help="queue_log: " + OUTBOUND_QUEUE_HELP)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("report", help="export interval reports (15/30-minute KPIs) as CSV or JSON")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--queue", action="append", default=[], help="only this queue (repeatable)")
    p.add_argument("--interval-minutes", type=int, default=None, help="only intervals of this length")
    p.add_argument("--agents", action="store_true", help="the agents' interval and day records (with the scorecard) instead")
    p.add_argument("--agent", action="append", default=[], help="with --agents: only this agent id (repeatable)")
    p.add_argument("--days", action="store_true", help="with --agents: only the day records (scorecards)")
    p.add_argument("--since", default=None, help="first local date, YYYY-MM-DD")
    p.add_argument("--until", default=None, help="last local date, YYYY-MM-DD")
    p.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("follow", help="live: follow an Asterisk queue_log file like tail -F (rotation, truncation, restarts)")
    p.add_argument("path", help="the queue_log file, e.g. /var/log/asterisk/queue_log")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="where the read position is kept across restarts (default: in stream.data_dir)")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS", help="how often the file is checked (default 0.5)")
    p.add_argument("--source-name", default=None, help="the events' `source`, which their ids derive from: use the same for replays of this system (default asterisk)")
    p.add_argument("--include-caller", action="store_true", help="put caller numbers in the events (personal data)")
    p.add_argument("--agent-alias", action="append", default=[], metavar="INTERFACE=NAME",
                   help="member interface as ADDMEMBER logs it = member name as calls log it (repeatable); "
                        "better: log_membername_as_agent = yes in queues.conf")
    p.add_argument("--outbound-queue", default=None, metavar="QUEUE", help=OUTBOUND_QUEUE_HELP)
    p.set_defaults(func=cmd_follow)

    p = sub.add_parser("ami", help="live: Asterisk queue events over the Manager Interface (AMI)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5038)
    p.add_argument("--username", required=True, help="manager.conf user (needs read = agent,call; no write)")
    p.add_argument("--secret-env", default="CALLPULSE_AMI_SECRET", metavar="VAR",
                   help="environment variable holding the AMI secret (default CALLPULSE_AMI_SECRET)")
    p.add_argument("--events", default="call,agent", help="AMI event classes to subscribe to; add ,dialplan for flow-out reasons")
    p.add_argument("--include-caller", action="store_true", help="put caller numbers in the events (personal data)")
    p.add_argument("--source-name", default=None, help="the events' `source`, which their ids derive from: use the same for replays of this system (default asterisk-ami)")
    p.add_argument("--record", default=None, metavar="FILE", help="also record the session, for `callpulse replay`")
    p.set_defaults(func=cmd_ami)

    p = sub.add_parser("freeswitch", help="live: FreeSWITCH mod_callcenter events over the event socket (ESL)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8021)
    p.add_argument("--password-env", default="CALLPULSE_ESL_PASSWORD", metavar="VAR",
                   help="environment variable holding the event socket password (default CALLPULSE_ESL_PASSWORD)")
    p.add_argument("--queue", action="append", default=[], help="only this mod_callcenter queue, e.g. support@default (repeatable)")
    p.add_argument("--source-name", default=None, help="the events' `source`, which their ids derive from: use the same for replays of this system (default freeswitch)")
    p.add_argument("--record", default=None, metavar="FILE", help="also record the session, for `callpulse replay`")
    p.set_defaults(func=cmd_freeswitch)

    p = sub.add_parser("wallboard", help="terminal wallboard from running workers")
    p.add_argument("urls", nargs="+", help="worker base URLs, e.g. http://localhost:6066")
    p.add_argument("--window", default="15m")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(func=cmd_wallboard)

    p = sub.add_parser("demo", help="embedded broker + worker + simulator + live wallboard")
    p.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS))
    p.add_argument("--broker-port", type=int, default=19092)
    p.add_argument("--web-port", type=int, default=6066)
    p.add_argument("--window", default="15m")
    p.add_argument("--seconds", type=float, default=None, help="stop by itself after this many seconds")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config:
        os.environ["CALLPULSE_CONFIG"] = args.config
    try:
        load_config(args.config)  # fail early, naming the key
        return args.func(args)
    except (ConfigError, ForecastError) as exc:
        print(f"callpulse: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
