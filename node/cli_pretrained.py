"""`slm-node import` and `slm-node plan`: a pretrained base as a node's model, and what
training on some data will take on this machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm.config import DEFAULT_BASE, PRESETS
from slm.errors import ConfigError


def add_import(sub: argparse._SubParsersAction, home: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import",
        parents=[home],
        help="make a pretrained base a model folder, calibrated on your data",
        description="Read a pretrained Llama-family base (GGUF, its quantised tensors "
        "dequantised, or a Hugging Face safetensors folder) with its tokenizer and chat template "
        "into a model folder, unchanged, calibrated for confidence on --data: a node that "
        "serves the base itself (a generalist), or the peer an adapter is measured against.",
    )
    p.add_argument(
        "source", nargs="?", default=DEFAULT_BASE,
        help="an embedded base, a .gguf file or a HF folder (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="text to calibrate confidence on")
    p.add_argument("--domain", default="general", help="domain name (default: %(default)s)")
    p.add_argument("--out", type=Path, help="model folder (default: <home>/model)")
    p.add_argument("--force", action="store_true", help="replace the model already in --out")
    p.set_defaults(run=cmd_import)


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="how much data you have and how long training it will take here",
        description="Count the tokens in a file or folder (text by the tokenizer; images, "
        "audio and video by the original SLM's size estimates) and estimate the time per epoch "
        "from this machine's measured training throughput for the chosen base or preset.",
    )
    p.add_argument("--data", type=Path, required=True, help="a file or folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--base", help=f"a pretrained base (default: {DEFAULT_BASE})")
    which.add_argument("--preset", choices=list(PRESETS), help="a from-scratch preset instead")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    p.set_defaults(run=cmd_plan)


def cmd_import(args: argparse.Namespace) -> None:
    from node.config import NodeConfig
    from slm import pretrained
    from slm.checkpoint import prepare_out_dir
    from slm.import_base import import_base
    from slm.train import read_corpus

    text = read_corpus(args.data)
    out = args.out or NodeConfig.load(args.home).model_dir
    if not args.force:  # refused before the base is read (seconds); --force clears after it
        prepare_out_dir(out, resume=False, force=False)
    base = pretrained.load(args.source)
    if args.force:
        prepare_out_dir(out, resume=False, force=True)
    print(f"calibrating {base.name} ({base.config.num_parameters() / 1e6:.1f}M) on "
          f"{len(text.encode()):,} bytes of {args.domain} text…", file=sys.stderr)  # fmt: skip
    import_base(base, text, args.domain, out)
    print(f"imported {base.name} (sha256 {base.sha256[:12]}…) into {out} as a {args.domain} model")


def cmd_plan(args: argparse.Namespace) -> None:
    from slm.plan import plan, render

    use_threads(args.threads)
    print(render(plan(args.data, base=args.base, preset=args.preset)))


def use_threads(threads: int | None) -> None:
    """--threads: torch's CPU threads (default: all cores)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
