"""`slm-node`: a thin shell over slm/ and node/; every error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli_pretrained import add_import, add_plan, use_threads
from protos.errors import WireError
from slm.command import add_flags, parser_with_commands, run, values
from slm.config import (
    ADAPTER_TRAIN,
    EMBEDDED_BASES,
    PRESETS,
    AdapterConfig,
    TrainConfig,
    get_preset,
    load_seed_config,
)
from slm.errors import ConfigError, SLMError

if TYPE_CHECKING:
    import numpy as np

    from slm.model_folder import LoadedModel
    from slm.word_counts import WordCounts

DESCRIPTION = """Run a SwarmLLM node: train a domain SLM on your own data, use it locally, and
serve it to a hub."""
EPILOG = """\
examples:
  slm-node init
  slm-node train --data data/corpora/medicine.txt --domain medicine --base smollm2-135m-instruct
  slm-node train --data data/corpora/medicine.txt --domain medicine --preset slm-demo
  slm-node import --data data/corpora/news.txt --domain general
  slm-node plan --data data/corpora/
  slm-node generate "Acute serous otitis media" --max-tokens 40
  slm-node score "Malignant neoplasm of the left retina"
  slm-node info --preset slm-63m
"""


def main(argv: list[str] | None = None) -> int:
    return run("slm-node", build_parser(), argv, (SLMError, WireError))


def build_parser() -> argparse.ArgumentParser:
    from node.config import DEFAULT_HOME

    parser, sub = parser_with_commands("slm-node", DESCRIPTION, EPILOG)
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help="node home: key, node.toml, model (default: $SLM_NODE_HOME or %(default)s)",
    )

    p = sub.add_parser("init", parents=[home], help="create the node's identity key and node.toml")
    p.set_defaults(run=cmd_init)
    _add_train(sub, home)
    add_import(sub, home)
    add_plan(sub)
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", type=Path, help="model folder (default: <home>/model)")
    model.add_argument("--int8", action="store_true", help="int8 dynamic quantisation (CPU)")
    _add_use(sub, home, model)
    _add_join(sub, home, model)
    return parser


def _add_train(sub: argparse._SubParsersAction, home: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[home],
        help="train the node's model on a text file or folder",
        description="Train a domain model into a model folder: a low-rank adapter on a "
        "pretrained base (--base; the folder stores only the adapter), or a model from scratch "
        "(--preset). Flags below override the preset's or the base's training settings; an "
        "original SLM JSON config (--config) is applied on top of the preset first.",
    )
    p.add_argument("--data", type=Path, help="UTF-8 text file, or folder of them")
    p.add_argument("--domain", required=True, help="domain name, e.g. medicine")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--base",
        help=f"train an adapter on this pretrained base: {', '.join(EMBEDDED_BASES)} (embedded, "
        "offline), a .gguf file or a Hugging Face model folder",
    )
    which.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="train from scratch at this model size (default without --base: slm-63m)",
    )
    p.add_argument(
        "--config", type=Path, help="original SLM JSON config (main, SLMOtak, SLMTrainLoad)"
    )
    p.add_argument("--out", type=Path, help="model folder (default: <home>/model)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--force", action="store_true", help="replace the model already in --out")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    group = p.add_argument_group("training overrides (default: the preset's or the base's value)")
    standard = PRESETS["slm-63m"].train
    add_flags(group, TrainConfig, prefix="train_",
              describe=lambda f: f"slm-63m: {getattr(standard, f.name)}, "
              f"--base: {getattr(ADAPTER_TRAIN, f.name)}")  # fmt: skip
    add_flags(p.add_argument_group("adapter (with --base)"), AdapterConfig, prefix="adapter_")
    p.set_defaults(run=cmd_train)


def _add_use(
    sub: argparse._SubParsersAction, home: argparse.ArgumentParser,
    model: argparse.ArgumentParser,
) -> None:  # fmt: skip
    """generate, score and info: using the model here, without a hub."""
    from protos.wire import SamplingParams

    p = sub.add_parser("generate", parents=[home, model], help="stream a completion of a prompt")
    p.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    add_flags(p.add_argument_group("sampling"), SamplingParams)
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser(
        "score",
        parents=[home, model],
        help="how well the model knows a prompt",
        description="Print loglik (nats), bits per byte and calibrated confidence: the numbers "
        "a hub routes on.",
    )
    p.add_argument("prompt", help="the prompt; '-' reads it from standard input")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=cmd_score)

    p = sub.add_parser(
        "info", parents=[home], help="parameter count, shape, domain, training summary"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--preset", choices=list(PRESETS), help="describe a preset instead of a model"
    )
    which.add_argument("--model", type=Path, help="model folder (default: <home>/model)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=cmd_info)


def _add_join(
    sub: argparse._SubParsersAction, home: argparse.ArgumentParser,
    model: argparse.ArgumentParser,
) -> None:  # fmt: skip
    from node.config import JoinOptions

    p = sub.add_parser(
        "join",
        parents=[home, model],
        help="serve a hub: answer its score and generate requests",
        description="Dial the hub, prove this node's key, and serve score and generate requests "
        "until Ctrl-C (which lets requests in progress finish). A dropped connection is "
        "redialled with backoff; a refusal (bad token, revoked key) ends the command. The "
        "token is needed only the first time (or for a new domain).",
        epilog="example:\n  slm-node join --hub hub.example.org:7443 --token slmj_... --ca ca.pem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(p, JoinOptions, only=("hub", "token", "ca", "insecure", "capacity", "min_confidence",
                                    "role"))  # fmt: skip
    p.add_argument(
        "--data", type=Path,
        help="this node's training data (file or folder), for the hub's federated rounds; it "
        "never leaves the node (default: none, so the node serves but does not train)",
    )  # fmt: skip
    p.add_argument(
        "--reference", type=Path, metavar="PATH",
        help="text this node may quote (file or folder) when it refines a generalist's draft; "
        "quotes reach the clients, so give only what may be published, often the same text as "
        "--data (default: none, so the node answers directly but refines no draft)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="CPU threads for torch, serving and federated "
                   "training alike (default: all cores)")  # fmt: skip
    p.set_defaults(run=cmd_join)


def cmd_init(args: argparse.Namespace) -> None:
    from node.config import NodeConfig
    from node.identity import generate_key, load_key, public_openssh, write_key
    from protos.signing import node_id

    cfg = NodeConfig.load(args.home)
    if cfg.key_path.exists():
        key = load_key(cfg.key_path)
        print(f"node home {args.home} already initialised; node id {node_id(public_openssh(key))}")
        return
    key = generate_key()
    write_key(cfg.key_path, key)
    if not cfg.settings_path.exists():
        cfg.save()
    print(f"node id  {node_id(public_openssh(key))}")
    print(f"key      {cfg.key_path} (ECDSA P-384, OpenSSH)")
    print(f"settings {cfg.settings_path}")


def cmd_train(args: argparse.Namespace) -> None:
    from node.config import NodeConfig
    from node.progress import TrainingProgress
    from slm import pretrained
    from slm.checkpoint import prepare_out_dir
    from slm.train import read_corpus, train

    base = adapter = None
    adapter_flags = values(AdapterConfig, args, prefix="adapter_")
    if args.base is not None:
        if args.config is not None:
            raise ConfigError("--config shapes a model from scratch; it does not go with --base")
        base = pretrained.load(args.base)
        adapter = AdapterConfig(**adapter_flags)
        model_cfg, train_cfg, data, name = base.config, ADAPTER_TRAIN, args.data, args.base
    elif adapter_flags:
        raise ConfigError("--adapter-* flags need --base")
    else:
        name = args.preset or "slm-63m"
        preset = get_preset(name)
        model_cfg, train_cfg, data = preset.model, preset.train, args.data
    if args.config is not None:
        seed = load_seed_config(args.config, preset)
        model_cfg, train_cfg = seed.model, seed.train
        data = data or seed.data_path
        for note in seed.notes:
            print(f"slm-node: note: {note}", file=sys.stderr)
    train_cfg = replace(train_cfg, **values(TrainConfig, args, prefix="train_"))
    if data is None:
        raise ConfigError("no training data: pass --data FILE|DIR")
    use_threads(args.threads)
    out = args.out or NodeConfig.load(args.home).model_dir
    text = read_corpus(data)  # check the data before touching the out folder
    prepare_out_dir(out, resume=args.resume, force=args.force)
    with TrainingProgress(name, model_cfg.num_parameters()) as progress:
        result = train(
            text,
            args.domain,
            out,
            model_cfg,
            train_cfg,
            resume=args.resume,
            on_step=progress.step,
            on_eval=progress.evaluated,
            base=base,
            adapter=adapter,
        )
    print(
        f"trained {args.domain} model in {out}: {result.steps} steps, best validation loss "
        f"{result.best_val_loss:.4f}, stopped by {result.stop_reason.replace('_', ' ')} "
        f"after {result.elapsed_s:.0f}s"
    )


def _prompt(args: argparse.Namespace) -> str:
    try:
        text = sys.stdin.buffer.read().decode("utf-8") if args.prompt == "-" else args.prompt
        text.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise ConfigError("the prompt is not valid UTF-8") from None
    if not text:
        raise ConfigError("the prompt is empty")
    return text


def _of_text(loaded: LoadedModel, text: Path | None) -> tuple[np.ndarray | None, WordCounts | None]:
    """The centroid and word counts of the node's own text, where its model folder lacks them
    (a folder trained elsewhere): (None, None) for what the folder has or without text."""
    if text is None or (loaded.centroid is not None and loaded.words is not None):
        return None, None
    from slm.encoder import text_centroid
    from slm.train import read_corpus
    from slm.word_counts import WordCounts

    corpus = read_corpus(text)
    return (text_centroid(corpus) if loaded.centroid is None else None,
            WordCounts.of_text(corpus) if loaded.words is None else None)  # fmt: skip


def _load(args: argparse.Namespace):
    from node.config import NodeConfig
    from slm.model_folder import load_model_folder
    from slm.train import default_device

    folder = args.model or NodeConfig.load(args.home).model_dir
    device = "cpu" if args.int8 else default_device()
    return load_model_folder(folder, device=device, serving="int8" if args.int8 else "fp32")


def cmd_generate(args: argparse.Namespace) -> None:
    from protos.wire import SamplingParams
    from slm.generate import stream_text

    params = SamplingParams(**values(SamplingParams, args))
    prompt = _prompt(args)
    loaded = _load(args)
    for piece in stream_text(loaded.model, loaded.tokenizer, prompt, params):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def cmd_score(args: argparse.Namespace) -> None:
    from slm.scoring import score

    prompt = _prompt(args)
    loaded = _load(args)
    s = score(loaded.model, loaded.tokenizer, loaded.quantiles, prompt)
    if args.json:
        print(json.dumps({"domain": loaded.domain, "version": loaded.version, **vars(s)}))
        return
    print(f"domain         {loaded.domain}")
    print(f"loglik         {s.loglik:.3f} nats ({s.n_tokens} tokens, {s.n_bytes} bytes)")
    print(f"bits per byte  {s.bits_per_byte:.4f}")
    print(f"confidence     {s.confidence:.3f}")


def cmd_info(args: argparse.Namespace) -> None:
    from node.config import NodeConfig
    from slm.model_folder import load_model_folder

    info: dict[str, Any]
    if args.preset:
        preset = get_preset(args.preset)
        cfg = preset.model
        info = {"preset": args.preset, "summary": preset.summary}
    else:
        loaded = load_model_folder(args.model or NodeConfig.load(args.home).model_dir)
        cfg = loaded.config
        named = list(loaded.model.named_parameters())
        adapter = sum(p.numel() for n, p in named if n.endswith((".lora_a", ".lora_b")))
        counted = sum(p.numel() for _, p in named) - adapter
        if counted != cfg.num_parameters():
            raise SLMError(
                f"model has {counted} parameters, config predicts {cfg.num_parameters()}"
            )
        info = {
            "model": str(loaded.path),
            "domain": loaded.domain,
            "version": loaded.version,
            "tokenizer_vocab": loaded.tokenizer.vocab_size,
            "training": loaded.training,
        }
        if loaded.base is not None:
            info["base"] = (
                f"{loaded.base.get('name')} (sha256 {str(loaded.base.get('sha256'))[:12]}…)"
            )
        if adapter:
            info["adapter"] = f"{adapter:,} parameters, rank {loaded.base['adapter']['rank']}"
    info = {"parameters": cfg.num_parameters(), **info, "shape": vars(cfg)}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"parameters  {info['parameters']:,}")
    for key in (
        "preset",
        "summary",
        "model",
        "domain",
        "version",
        "base",
        "adapter",
        "tokenizer_vocab",
    ):
        if key in info:
            print(f"{key.replace('_', ' '):<11} {info[key]}")
    print("shape       " + ", ".join(f"{k}={v}" for k, v in info["shape"].items()))
    training = info.get("training") or {}
    if "imported_from" in training:
        print(f"training    none: imported from {training['imported_from']}, calibrated on "
              f"{training['corpus_bytes']:,} bytes, {training['finished']}")  # fmt: skip
    elif training:
        print(
            f"training    {training['steps']} steps, best validation loss "
            f"{training['best_val_loss']:.4f}, stopped by {training['stop_reason']}, "
            f"{training['corpus_bytes']:,} bytes of data, {training['elapsed_s']:.0f}s "
            f"on {training['device']}, finished {training['finished']}"
        )


def cmd_join(args: argparse.Namespace) -> None:
    import asyncio
    import time

    from node.adoption import ModelWatcher, stamp
    from node.config import JoinOptions, NodeConfig
    from node.identity import load_key
    from node.join import NodeAgent
    from node.service import NodeService
    from node.supernode import SuperNode, SuperNodeOptions, node_config_arg
    from protos import flower_keys as keys

    options = JoinOptions(**values(JoinOptions, args))
    use_threads(args.threads)
    node = NodeConfig.load(args.home)
    key = load_key(node.key_path)
    before_load = stamp(args.model or node.model_dir)
    loaded = _load(args)
    for flag, path in (("--data", args.data), ("--reference", args.reference)):
        if path is not None and not path.exists():
            raise ConfigError(f"{flag} {path} does not exist")
    if args.reference is not None and options.role == "generalist":
        raise ConfigError("a generalist drafts, it refines nothing: drop --reference, or join "
                          "with --role domain")  # fmt: skip
    refiner = None
    if args.reference is not None:
        from slm.refine import load_refiner

        refiner = load_refiner(loaded, args.reference, "int8" if args.int8 else "fp32")
    centroid, words = _of_text(loaded, args.reference or args.data)
    service = NodeService(loaded, key, options.min_confidence, refiner, centroid, words)
    training = {
        keys.NODE_MODEL: str(service.loaded.path.resolve()),
        keys.NODE_DOMAIN: service.loaded.domain,
    }
    if args.data is not None:
        training[keys.NODE_DATA] = str(args.data.resolve())
    if args.threads is not None:  # rounds train with the same budget: nodes sharing a machine
        training[keys.NODE_THREADS] = str(args.threads)  # must not oversubscribe its cores
    node_config_arg(training)  # a path Flower cannot carry fails now, with its reason
    supernode_options = SuperNodeOptions(
        home=args.home, key=node.key_path.resolve(), ca=options.ca, insecure=options.insecure,
        node_config=training,
    )  # fmt: skip

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    log(f"node {service.node_id}: {service.loaded.domain} model {service.loaded.version}, "
        f"dialling {args.hub}")  # fmt: skip
    agent = NodeAgent(service, options, log, SuperNode(supernode_options, log))
    agent.watcher = ModelWatcher(service.loaded.path, lambda: _load(args), service, log,
                                 on_swap=agent.version_changed, seen=before_load)  # fmt: skip
    asyncio.run(agent.run())
    log("left the hub")


if __name__ == "__main__":
    sys.exit(main())
