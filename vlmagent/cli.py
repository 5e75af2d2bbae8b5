"""The `vlmagent` command line. Each subcommand is a thin shell over a library function.

    vlmagent score PATH... --out results.jsonl [--report report.html] [--workers N] [--resume]
                   [--backend local|ray] [--config FILE] [key.path=value ...]
    vlmagent score --from-responses responses.jsonl --scaffold static|vite-react --out ... (same)
    vlmagent rollout CONFIG --n N --out traj.jsonl [--policy PATH|expert] [key.path=value ...]
    accelerate launch -m vlmagent.cli train CONFIG [key.path=value ...]
    vlmagent tiny --out DIR [--family qwen2_5_vl|qwen2_vl|qwen3_vl]
    vlmagent debug [--policy PATH|manual] [--config FILE] [--host 127.0.0.1] [--port N]
    vlmagent drive make-data --out DIR --scenes N [--seed S] [--version V]
    vlmagent drive labels --dataroot DIR --version V --out labels.jsonl [--rule JSON]
    vlmagent router eval CONFIG --out report.json [--n N] [--policy PATH] [key.path=value ...]
    vlmagent router train CONFIG [key.path=value ...]     (the same as `train`)
    vlmagent check-config FILE [key.path=value ...]

Exit codes: 0 done (low scores are results, not errors), 1 the job itself failed,
2 usage error (one line on stderr: missing path, unreadable config, unknown key).
"""
from __future__ import annotations

import argparse
import json
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
    from vlmagent.errors import UsageError
    from vlmagent.scoring.runner import format_summary
    from vlmagent.scoring.sites import score

    paths, overrides = _split_overrides(args.paths + args.extra)
    if args.from_responses and paths:
        raise UsageError("give site folders or --from-responses, not both")
    if not paths and not args.from_responses:
        raise UsageError("give at least one site folder or folder of sites")
    if getattr(args, "judge", None):
        overrides.append(f"reward.aesthetics.judge={args.judge}")
    if getattr(args, "backend", None):
        overrides.append(f"score.backend={args.backend}")
    cfg = config_mod.load(args.config, overrides)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.from_responses:  # model output -> projects (web/webgen.py) -> the same cascade
        from vlmagent.scoring.responses import score_responses
        summary = score_responses(args.from_responses, args.out, cfg, scaffold=args.scaffold,
                                  workers=args.workers, resume=args.resume, report=args.report,
                                  progress=not args.quiet)
    else:
        summary = score(paths, args.out, cfg, workers=args.workers, resume=args.resume,
                        report=args.report, progress=not args.quiet)
    print(format_summary(summary))
    print(f"results: {args.out}" + (f"\nreport:  {args.report}" if args.report else ""))
    missing = summary.sites - len(summary.lines)
    return 1 if missing else 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """Episodes of the configured domain through the agent loop, saved as trajectories, each
    with its episode reward (the terms of train.defaults)."""
    from tqdm import tqdm

    from vlmagent import agent, trajectory
    from vlmagent.domains import get_domain
    from vlmagent.errors import UsageError
    from vlmagent.policy import Policy
    from vlmagent.rewards.episode import RewardTerms, record, score_episodes, summary
    from vlmagent.train.data import expert_episodes, samples

    cfg = config_mod.load(args.config, args.overrides + args.extra)
    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if args.policy and args.policy != "expert":
        cfg.policy.path = args.policy
    if not cfg.policy.path:
        raise UsageError("no model: set policy.path (for example `vlmagent tiny --out out/tiny` "
                         "then policy.path=out/tiny); the expert policy uses its tokenizer")
    policy = Policy.from_config(cfg.policy)
    name = cfg.domain.name
    batch = samples(cfg, policy, name, args.n, cfg.domain.seed)
    with tqdm(total=len(batch), desc="rollout", unit="episode", disable=args.quiet) as bar:
        if args.policy == "expert":  # both modes, alternating, unless agent.force_mode
            trajs = expert_episodes(cfg, policy, batch, name, seed=args.seed,
                                    progress=bar.update)
        else:
            trajs = agent.rollout(policy, batch, cfg.agent, seed=args.seed, progress=bar.update)
    scores = score_episodes(trajs, batch, RewardTerms.from_config(cfg), get_domain(name),
                            cfg=cfg)
    record(trajs, scores)
    trajectory.save(trajs, args.out)
    m = summary(trajs, scores)
    calls = sum(t.n_tool_calls for t in trajs) / len(trajs)
    print(f"{len(trajs)} episodes -> {args.out}; accuracy {m['accuracy']:.3f}, "
          f"reward {m['reward']:.3f}, tool calls per episode {calls:.2f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The staged training pipeline; run it under `accelerate launch -m vlmagent.cli train`."""
    from vlmagent.errors import UsageError
    from vlmagent.train import pipeline

    cfg = config_mod.load(args.config, args.overrides + args.extra)
    if not cfg.policy.path:
        raise UsageError("no model: set policy.path (e.g. `vlmagent tiny --out out/tiny`)")
    try:
        pipeline.run(cfg)  # prints the held-out curve (stage x domain) at the end
    except ValueError as e:  # a bad stage list: name it, as for any config error
        raise UsageError(f"{args.config}: {e}") from None
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    """One recipe over several seeds: per-stage mean, min, max and 95% CI of held-out metrics."""
    from vlmagent.errors import UsageError
    from vlmagent.train.seeds import parse_seeds, run_seeds

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    try:
        run_seeds(args.config, seeds, args.out, args.overrides + args.extra,
                  tiny_family=args.tiny, jobs=args.jobs, tiny_corpus=args.tiny_corpus)
    except ValueError as e:  # a bad stage list: name it, as for any config error
        raise UsageError(f"{args.config}: {e}") from None
    print((Path(args.out) / "seeds.md").read_text())
    print(f"report: {args.out}/seeds.json, {args.out}/seeds.md")
    return 0


def cmd_debug(args: argparse.Namespace) -> int:
    """The interactive tool-call debugger: a local page, on the shipped zoomqa sample."""
    from vlmagent.debug import DebugError, open_session
    from vlmagent.debug.server import serve
    from vlmagent.errors import UsageError

    cfg = config_mod.load(args.config, args.extra)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 (any free port) to 65535, got {args.port}")
    try:
        session = open_session(cfg, args.policy)
    except DebugError as e:
        raise UsageError(str(e)) from None
    return serve(session, args.host, args.port)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file, args.overrides + args.extra)
    print(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_tiny(args: argparse.Namespace) -> int:
    from vlmagent.errors import UsageError
    from vlmagent.tiny import TINY_FAMILIES, cli_tiny

    if args.family not in TINY_FAMILIES:
        raise UsageError(f"unknown family {args.family!r} (valid: {', '.join(TINY_FAMILIES)})")
    return cli_tiny(args)


def cmd_drive(args: argparse.Namespace) -> int:
    from vlmagent.errors import UsageError

    if args.drive_cmd == "make-data":
        from vlmagent.drive.synth import make_dataset

        if args.scenes < 1:
            raise UsageError(f"--scenes must be at least 1, got {args.scenes}")
        info = make_dataset(args.out, args.scenes, seed=args.seed, version=args.version,
                            size=tuple(args.size), seconds=args.seconds, progress=not args.quiet,
                            workers=args.workers, scenarios=args.scenarios,
                            twins=args.twins)
        print(json.dumps(info, indent=1))
        return 0
    from vlmagent.drive.labels import LabelRule, format_distribution, write_labels

    table = Path(args.dataroot, args.version)
    if not table.is_dir():
        raise UsageError(f"no nuScenes tables at {table} (--dataroot DIR --version V)")
    rule = LabelRule.from_dict(json.loads(args.rule)) if args.rule else None
    dist = write_labels(args.dataroot, args.version, args.out, rule=rule)
    print(format_distribution(dist))
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    """The visual-resolution router: train (the cascade's vico/router stages) or evaluate."""
    if args.router_cmd == "train":
        return cmd_train(args)
    from dataclasses import replace

    from vlmagent.errors import UsageError
    from vlmagent.policy import Policy
    from vlmagent.router.evaluate import SETTINGS, router_eval, trained_paths

    cfg = config_mod.load(args.config, args.overrides + args.extra)
    settings = tuple(args.settings.split(",")) if args.settings else SETTINGS
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise UsageError(f"unknown setting {bad[0]!r} (valid: {', '.join(SETTINGS)})")
    path, head, routed = trained_paths(cfg)
    if args.policy:
        path = routed = args.policy
    if "learned" in settings and not head:
        raise UsageError("the learned setting needs a router head: train the config's `router` "
                         "stage first, or set agent.router.path")
    cfg = replace(cfg, agent=replace(cfg.agent, router=replace(cfg.agent.router, path=head)))

    def load(p: str) -> Policy:
        return Policy.from_pretrained(p, cfg.policy.dtype, cfg.policy.device)

    policy = load(path)
    routed_policy = policy if routed == path else load(routed)
    print(f"[router eval] self-routing: {path}; routed settings: {routed}; router head {head}")
    router_eval(cfg, policy, args.n, args.out, settings, routed_policy=routed_policy)
    print(f"report: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vlmagent", description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("score", help="score folders of websites with the reward cascade")
    sp.add_argument("paths", nargs="*", metavar="PATH",
                    help="a site folder or a folder of site folders; key.path=value overrides")
    sp.add_argument("--out", required=True, help="results JSONL, one line per site")
    sp.add_argument("--report", help="also write an HTML report here")
    sp.add_argument("--workers", type=int, help="worker processes, one browser each")
    sp.add_argument("--resume", action="store_true",
                    help="keep existing lines and skip sites whose content was scored")
    sp.add_argument("--config", help="YAML config (see configs/score.yaml)")
    sp.add_argument("--from-responses", metavar="JSONL",
                    help='score model responses instead of folders: {"id": ..., "text": ...} '
                    "per line (format: vlmagent/web/webgen.py)")
    sp.add_argument("--scaffold", help="static | vite-react (default: webgen.scaffold)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--judge", choices=["metrics", "vlm", "openai"],
                    help="aesthetics judge (same as reward.aesthetics.judge=...)")
    sp.add_argument("--backend", choices=["local", "ray"],
                    help="where the workers run: local processes, or Ray actors on a local "
                    "cluster or score.ray.address (same as score.backend=...)")
    sp.set_defaults(fn=cmd_score)

    rp = sub.add_parser("rollout", help="run episodes through the agent loop, save trajectories")
    rp.add_argument("config", help="YAML recipe (see configs/zoomqa_rollout.yaml)")
    rp.add_argument("overrides", nargs="*", metavar="key.path=value")
    rp.add_argument("--n", type=int, default=8, help="episodes (one per generated sample)")
    rp.add_argument("--out", required=True, help="trajectory JSONL; images go beside it")
    rp.add_argument("--policy", help="a model folder or hub id, or 'expert' (scripted)")
    rp.add_argument("--seed", type=int, default=0, help="sampling seed")
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(fn=cmd_rollout)

    trp = sub.add_parser("train", help="run the staged training pipeline of a config")
    trp.add_argument("config", help="YAML recipe (see configs/zoomqa_cascade.yaml)")
    trp.add_argument("overrides", nargs="*", metavar="key.path=value")
    trp.set_defaults(fn=cmd_train)

    sdp = sub.add_parser("seeds", help="train a recipe for several seeds; report each stage "
                         "over the seeds (mean, min, max, 95%% CI)")
    sdp.add_argument("config", help="YAML recipe (see configs/zoomqa_cascade.yaml)")
    sdp.add_argument("overrides", nargs="*", metavar="key.path=value")
    sdp.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3,7 (default 0-4)")
    sdp.add_argument("--out", required=True, help="folder: seed-S/ runs, seeds.json, seeds.md")
    sdp.add_argument("--tiny", metavar="FAMILY",
                     help="build a tiny model of this family per seed (init seed = seed)")
    sdp.add_argument("--tiny-corpus", default="base", choices=("base", "web"),
                     help="the tiny models' tokenizer text (web: for webgen recipes)")
    sdp.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    sdp.set_defaults(fn=cmd_seeds)

    tp = sub.add_parser("tiny", help="build a tiny random Qwen-VL model + processor offline")
    # Flags declared here, not imported from tiny.py: that would import torch for every command.
    tp.add_argument("--out", required=True, help="folder to write the model and processor to")
    tp.add_argument("--family", default="qwen2_5_vl", help="qwen2_vl | qwen2_5_vl | qwen3_vl")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--corpus", default="base", choices=("base", "web"),
                    help="tokenizer training text: base, or web (adds HTML/CSS/TSX for webgen)")
    tp.set_defaults(fn=cmd_tiny)

    dp = sub.add_parser("debug", help="step an episode turn by turn in a local web page")
    dp.add_argument("--policy", default="manual",
                    help="a model folder or hub id, or 'manual' (you write the turns)")
    dp.add_argument("--config", help="YAML config (agent, policy and domain sections)")
    dp.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    dp.add_argument("--port", type=int, default=7860, help="port; 0 picks a free one")
    dp.set_defaults(fn=cmd_debug)

    drp = sub.add_parser("drive", help="driving data: make a nuScenes-format dataset, "
                         "write meta-action labels")
    dsub = drp.add_subparsers(dest="drive_cmd", required=True)
    mp = dsub.add_parser("make-data", help="write a synthetic dataset in the nuScenes layout")
    mp.add_argument("--out", required=True, help="dataroot to write (DIR/<version>/, samples/)")
    mp.add_argument("--scenes", type=int, default=12)
    mp.add_argument("--seed", type=int, default=0)
    mp.add_argument("--version", default="v1.0-synth")
    mp.add_argument("--size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"),
                    help="camera image size")
    mp.add_argument("--seconds", type=float, default=20.0, help="scene length")
    mp.add_argument("--workers", type=int, default=1,
                    help="processes rendering scenes (0: one per core); the same bytes")
    mp.add_argument("--scenarios", nargs="+", metavar="NAME",
                    help="only these scenarios (default: all, in shuffled rounds)")
    mp.add_argument("--twins", action="store_true",
                    help="each scenario with a decoy twin (red / green light, crossing / "
                         "staying pedestrian) comes with its twin on the same street")
    mp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    lp = dsub.add_parser("labels", help="one meta-action label row per labelled key frame")
    lp.add_argument("--dataroot", required=True)
    lp.add_argument("--version", required=True, help="v1.0-mini, v1.0-trainval, v1.0-synth...")
    lp.add_argument("--out", required=True, help="labels JSONL")
    lp.add_argument("--rule", help='label thresholds as JSON, e.g. \'{"accel_delta": 1.0}\'')
    drp.set_defaults(fn=cmd_drive)

    rtp = sub.add_parser("router", help="the visual-resolution router: train, or evaluate "
                         "fixed / heuristic / learned / self-routing on held-out episodes")
    rsub = rtp.add_subparsers(dest="router_cmd", required=True)
    rtt = rsub.add_parser("train", help="run the config's stages (vico, router, ...)")
    rtt.add_argument("config")
    rtt.add_argument("overrides", nargs="*", metavar="key.path=value")
    rte = rsub.add_parser("eval", help="held-out episodes under every setting -> report JSON")
    rte.add_argument("config")
    rte.add_argument("overrides", nargs="*", metavar="key.path=value")
    rte.add_argument("--out", required=True, help="report JSON")
    rte.add_argument("--n", type=int, default=96, help="held-out samples")
    rte.add_argument("--policy", help="model folder for every setting (default: the last "
                     "trained stage; the routed settings: the stage that trained the head)")
    rte.add_argument("--settings", help="comma-separated subset of the settings")
    rtp.set_defaults(fn=cmd_router)

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
    from vlmagent.errors import UsageError

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
