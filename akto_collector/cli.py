"""Command line: `akto-collector run | doctor | version`.

Exit codes are ``exits``'s: 0 clean stop, 2 bad configuration (one line on
stderr naming the variable), 3 the kernel side could not be set up, 4 a
worker could not start.
"""

from __future__ import annotations

import argparse
import os
import sys

from akto_collector import __version__, exits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="akto-collector",
                                     description="eBPF API-traffic collector for Akto.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="capture until SIGINT/SIGTERM",
                         description="Capture HTTP traffic of this host until SIGINT/SIGTERM. "
                                     "Without a Kafka broker configured (AKTO_KAFKA_BROKER_MAL or "
                                     "AKTO_NLB_IP), every request/response pair is written as one "
                                     "JSON line to --output. Logs go to stderr.")
    run.add_argument("--output", default="-", help="where JSON lines go without Kafka (default: - = stdout)")
    run.add_argument("--dump-bpf", action="store_true", help="print the BPF program that would be loaded, and exit")
    sub.add_parser("version", help="print the version")
    doctor = sub.add_parser("doctor", help="check that this host can run the collector; exit 0 when capture can work")
    doctor.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(__version__)
        return exits.OK

    from akto_collector.config import ConfigError, Settings, unknown_variables, with_env_file
    from akto_collector.supervisor.reexec import STATE_VAR, ExecState, file_overrides

    try:
        # A fresh image after a restart already has the file's variables (and
        # keeps them: a reload is what reads the file again, validated first).
        env = dict(os.environ) if STATE_VAR in os.environ else with_env_file(os.environ)
        settings = Settings.from_env(env)
        if args.command == "run" and not settings.kafka_brokers:
            check_output(args.output)
    except ConfigError as exc:
        print(f"akto-collector: configuration error: {exc}", file=sys.stderr)
        return exits.CONFIG

    if args.command == "doctor":
        from akto_collector.doctor import run_checks

        return run_checks(settings, as_json=args.json)

    if args.dump_bpf:
        from akto_collector.kernel import loader

        print(loader.dump_program(loader.ProbeOptions.from_settings(settings)))
        return 0

    from akto_collector import logs
    from akto_collector.supervisor.arbiter import Arbiter

    log = logs.configure(settings.log_level, role="supervisor")
    for name in unknown_variables(env):
        log.warning("unknown_variable", variable=name)
    for text in settings.warnings():
        log.warning("config_warning", detail=text)
    if STATE_VAR not in env:
        state = ExecState(file_vars=file_overrides(os.environ, env))
        env[STATE_VAR] = state.encode()
    return Arbiter(settings, args.output, log, env=env).run()


def check_output(path: str) -> None:
    """``--output`` must be writable before anything starts (a worker could not boot otherwise)."""
    if path == "-":
        return
    from akto_collector.config import ConfigError  # noqa: PLC0415

    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise ConfigError(f"--output={path!r}: cannot open it for writing: {exc.strerror or exc}; "
                          "expected a writable file, or - for stdout") from None


if __name__ == "__main__":
    sys.exit(main())
