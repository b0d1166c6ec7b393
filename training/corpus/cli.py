"""``sed-corpus``: build the training corpus, or re-render its report.

    sed-corpus build ~/.cache/sed/corpus [--subset ci] [--shared-data PATH] [--deb-cache DIR]
                     [--no-soundfont] [--synthetic-voices]
    sed-corpus report ~/.cache/sed/corpus
    sed-corpus labels ~/.cache/sed/corpus      # the labels it can support (a TOML array)
    sed-corpus pool build ~/.cache/sed/pool [--free-only] [--only PKG ...]   # unlabelled pool
    sed-corpus pool cache ~/.cache/sed/pool    # log-mel + YAMNet scores per file (resumable)
    sed-corpus pool report ~/.cache/sed/pool   # the mix by package and kind, after the caps

``build`` writes ``train.csv`` / ``val.csv`` (clips), the soundscape manifests and
``train_all.csv`` (training clips + training soundscapes: what ``sed-train`` reads).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from training.corpus import pool as pool_mod
from training.corpus.build import BuildConfig, build, report_markdown
from training.corpus.labels import LabelRule, select_labels
from training.corpus.packages import PackageError
from training.corpus.soundfont import FLUIDSYNTH_INSTALL, SoundfontError

__all__ = ["main"]

log = logging.getLogger(__name__)

DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sed-corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download, decode, deduplicate, split, synthesise, mix")
    b.add_argument("dir", type=Path, help="output folder, e.g. ~/.cache/sed/corpus (outside git)")
    b.add_argument("--subset", choices=("full", "ci"), default="full")
    b.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED,
                   help=f"shared data folder (default {DEFAULT_SHARED})")
    b.add_argument("--deb-cache", type=Path, default=None, help="where .debs are kept (DIR/debs)")
    b.add_argument("--extra-data", type=Path, default=None,
                   help="another folder laid out like the shared data (*/manifest.csv)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-soundfont", action="store_true",
                   help="do not render General MIDI instruments from a soundfont (rendering "
                   f"needs fluidsynth: `{FLUIDSYNTH_INSTALL}`)")
    b.add_argument("--synthetic-voices", action="store_true",
                   help="also make the opt-in synthetic meows, screams, singing, sneezes, toilet "
                   "flushes and trains (training.corpus.synth.VOICE_KINDS; off for the default model)")
    b.add_argument("--free-only", action="store_true",
                   help="leave out every non-commercial source (CC BY-NC: urbansound8k, virufy); "
                   "a model trained on them inherits their terms")
    r = sub.add_parser("report", help="rewrite DIR/REPORT.md from DIR/corpus.json and print it")
    r.add_argument("dir", type=Path)
    lab = sub.add_parser("labels", help="print the labels DIR supports as a TOML `labels = [...]` "
                         "line; the ones short of the rule go to stderr with their counts")
    lab.add_argument("dir", type=Path)
    rule = LabelRule()
    lab.add_argument("--min-real", type=int, default=rule.min_real,
                     help=f"real training clips (default {rule.min_real})")
    lab.add_argument("--min-synthetic", type=int, default=rule.min_synthetic,
                     help=f"... or synthetic training clips (default {rule.min_synthetic})")
    lab.add_argument("--min-val", type=int, default=rule.min_val,
                     help=f"validation clips (default {rule.min_val})")
    pl = sub.add_parser("pool", help="the unlabelled pool of every recording (distillation)")
    pl.add_argument("action", choices=("build", "cache", "report"))
    pl.add_argument("dir", type=Path, help="pool folder, e.g. ~/.cache/sed/pool (outside git)")
    pl.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED)
    pl.add_argument("--no-shared", action="store_true", help="Debian packages only")
    pl.add_argument("--deb-cache", type=Path, default=None, help="where .debs are kept (DIR/debs)")
    pl.add_argument("--packages", type=Path, default=pool_mod.DEFAULT_PACKAGES,
                    help="package list (default: training/corpus/pool_packages.csv)")
    pl.add_argument("--only", nargs="+", default=None, metavar="PKG",
                    help="build only these train packages of the list")
    pl.add_argument("--free-only", action="store_true",
                    help="leave out every non-commercial source (urbansound8k, virufy)")
    dflt = pool_mod.PoolConfig()
    pl.add_argument("--music-hours", type=float, default=dflt.music_cap_hours)
    pl.add_argument("--speech-hours", type=float, default=dflt.speech_cap_hours)
    pl.add_argument("--threads", type=int, default=1, help="teacher threads for `cache`")
    return p


def _pool(args: argparse.Namespace) -> int:
    out: Path = args.dir.expanduser()
    cfg = pool_mod.PoolConfig(free_only=args.free_only, music_cap_hours=args.music_hours,
                              speech_cap_hours=args.speech_hours)
    if args.action == "build":
        out.mkdir(parents=True, exist_ok=True)
        shared = None if args.no_shared else args.shared_data.expanduser()
        if shared is not None and not shared.is_dir():
            log.error("shared data folder %s not found; pass --shared-data PATH or --no-shared",
                      shared)
            return 2
        start = time.monotonic()
        try:
            rows = pool_mod.build(out, (args.deb_cache or out / "debs").expanduser(), cfg, shared,
                                  args.packages, args.only)
        except (PackageError, pool_mod.PoolError) as e:
            log.error("%s", e)
            return 2
        log.info("pool %s: %d files, %.2f h, in %.0f s", out, len(rows),
                 sum(float(r["seconds"]) for r in rows) / 3600, time.monotonic() - start)
    elif args.action == "cache":
        from training.corpus import pool_cache

        return pool_cache.main_cache(out, args.threads)
    rows = pool_mod.read_pool(out)
    if not rows:
        log.error("%s holds no decoded package; run `sed-corpus pool build %s` first", out, out)
        return 2
    text = pool_mod.report_markdown(rows, pool_mod.select(rows, cfg))
    (out / "REPORT.md").write_text(text)
    if args.action == "report":
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "pool":
        return _pool(args)
    out: Path = args.dir.expanduser()
    if args.command == "build":
        shared = args.shared_data.expanduser()
        if not shared.is_dir():
            log.error("shared data folder %s not found; pass --shared-data PATH", shared)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        cfg = BuildConfig.for_subset(args.subset, args.seed)
        if args.no_soundfont:
            cfg = replace(cfg, soundfont_per_program=0)
        if args.synthetic_voices:
            cfg = replace(cfg, synthetic_voices=True)
        if args.free_only:
            cfg = replace(cfg, free_only=True)
        try:
            summary = build(out, shared, (args.deb_cache or out / "debs").expanduser(), cfg,
                            extra_data=args.extra_data)
        except SoundfontError as e:
            log.error("%s", e)
            return 2
        log.info("built %s in %.0f s: clips %s, real seconds %s", out,
                 time.monotonic() - start, summary["clips"], summary["real_seconds"])
        return 0
    summary_path = out / "corpus.json"
    if not summary_path.is_file():
        log.error("%s not found; run `sed-corpus build %s` first", summary_path, out)
        return 2
    summary = json.loads(summary_path.read_text())
    if args.command == "labels":
        rule = LabelRule(args.min_real, args.min_synthetic, args.min_val)
        kept, short = select_labels(summary["labels"], rule)
        print("labels = [" + ", ".join(json.dumps(k) for k in kept) + "]")
        log.info("%d labels meet the rule (%s); %d do not (real train / synthetic train / val): %s",
                 len(kept), rule.describe(), len(short),
                 ", ".join(f"{k} {r}/{s}/{v}" for k, (r, s, v) in short.items()))
        return 0
    text = report_markdown(summary)
    (out / "REPORT.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
