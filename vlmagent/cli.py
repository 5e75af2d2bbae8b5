"""The `vlmagent` command line. Each subcommand is a thin shell over a library function.

    vlmagent score PATH... --out results.jsonl [--report report.html] [--workers N] [--resume]
                   [--config FILE] [key.path=value ...]
    vlmagent check-config FILE [key.path=value ...]

Exit codes: 0 done (low scores are results, not errors), 1 the job itself failed,
2 usage error (one line on stderr: missing path, unreadable config, unknown key).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from vlmagent import config as config_mod


def _split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional words with '=' that are not existing paths are dotted config overrides."""
    paths, overrides = [], []
    for it in items:
        (overrides if "=" in it and not Path(it).exists() else paths).append(it)
    return paths, overrides


def cmd_score(args: argparse.Namespace) -> int:
    from vlmagent import scoring

    paths, overrides = _split_overrides(args.paths + args.extra)
    if not paths:
        raise scoring.UsageError("give at least one site folder or folder of sites")
    cfg = config_mod.load(args.config, overrides)
    if args.workers is not None and args.workers < 1:
        raise scoring.UsageError("--workers must be at least 1")
    summary = scoring.score(paths, args.out, cfg, workers=args.workers, resume=args.resume,
                            report=args.report, progress=not args.quiet)
    print(scoring.format_summary(summary))
    print(f"results: {args.out}" + (f"\nreport:  {args.report}" if args.report else ""))
    missing = summary.sites - len(summary.lines)
    return 1 if missing else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file, args.overrides + args.extra)
    print(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vlmagent", description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("score", help="score folders of websites with the reward cascade")
    sp.add_argument("paths", nargs="+", metavar="PATH",
                    help="a site folder or a folder of site folders; key.path=value overrides")
    sp.add_argument("--out", required=True, help="results JSONL, one line per site")
    sp.add_argument("--report", help="also write an HTML report here")
    sp.add_argument("--workers", type=int, help="worker processes, one browser each")
    sp.add_argument("--resume", action="store_true",
                    help="keep existing lines and skip sites whose content was scored")
    sp.add_argument("--config", help="YAML config (see configs/score.yaml)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(fn=cmd_score)

    cp = sub.add_parser("check-config", help="load a config strictly and print it resolved")
    cp.add_argument("file")
    cp.add_argument("overrides", nargs="*", metavar="key.path=value")
    cp.set_defaults(fn=cmd_check_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (`score DIR --out X key=value`): argparse leaves them over.
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    args.extra = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from vlmagent.scoring import UsageError

    try:
        return args.fn(args)
    except (UsageError, config_mod.ConfigError) as e:
        print(f"vlmagent {args.cmd}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlmagent {args.cmd}: interrupted; finished lines are kept (use --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
