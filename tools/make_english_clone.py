"""Build the English-Clone setting (DESIGN.md §5) through the normal pipeline.

    python tools/make_english_clone.py --output-dir runs/demo/setting \\
        [--corpus examples/data/sotu.jsonl.gz] [--vocab-size 4000] [--clone-share 0.1] \\
        [--dictionary-size 1700] [--heldout-share 0.1] [--knowledge-entities 30] ...

Steps: `megatron_prealign.evaluate.english_clone.build_sources` (tokenizers, texts, dictionary
TSVs, knowledge and transfer sets) -> ``tools/build_lexicon.py`` for the dictionary and the
held-out words -> ``tools/preprocess_data.py --lexicon`` for every text set -> `finalize` (checks,
token counts) -> ``<output-dir>/manifest.json``. An existing setting built with the same options
is reused unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from megatron_prealign.evaluate.english_clone import (
    MANIFEST,
    CloneSettingConfig,
    build_sources,
    field_docs,
    finalize,
    load_setting,
)
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.make_english_clone")
TOOLS = Path(__file__).resolve().parent
DEFAULT_CORPUS = TOOLS.parent / "examples" / "data" / "sotu.jsonl.gz"


def _load_tool(name: str):
    """A sibling tool as a module (tools/ is not a package); registered under its name so that
    its worker processes can find it."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    docs = field_docs(CloneSettingConfig)
    parser.add_argument("--output-dir", required=True, help=docs["output_dir"])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help=docs["corpus"] + " Default: %(default)s")
    for f in dataclasses.fields(CloneSettingConfig):
        if f.name in ("corpus", "output_dir"):
            continue
        if isinstance(f.default, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=f.default, help=f"{docs.get(f.name, '')} Default: %(default)s")
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                                help=f"{docs.get(f.name, '')} Default: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="tools/preprocess_data.py encoding processes")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching setting exists")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(CloneSettingConfig)}
    try:
        cfg = CloneSettingConfig(**options)
    except ValueError as exc:
        build_parser().error(str(exc))
    if not args.force and (Path(args.output_dir) / MANIFEST).is_file():
        existing = load_setting(args.output_dir)
        if existing.config == dataclasses.asdict(cfg) and "tokens" in existing.stats:
            logger.info("reusing the setting in %s (same options; --force rebuilds it)", args.output_dir)
            return 0
    start = time.perf_counter()
    setting = build_sources(cfg)
    build_lexicon, preprocess_data = _load_tool("build_lexicon"), _load_tool("preprocess_data")
    for job in setting.lexicon_jobs():
        if build_lexicon.main(job) != 0:
            logger.error("tools/build_lexicon.py %s failed", " ".join(job))
            return 2
    for job in setting.preprocess_jobs(args.workers):
        if preprocess_data.main(job) != 0:
            logger.error("tools/preprocess_data.py %s failed", " ".join(job))
            return 2
    setting = finalize(setting)
    logger.info("English-Clone setting ready in %s (%.0f s)", args.output_dir, time.perf_counter() - start)
    sys.stdout.write(json.dumps(setting.stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
