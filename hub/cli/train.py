"""`slm-hub train`: run federated rounds for one domain, or `--check` which of its nodes can
train now. Its flags are derived from TrainingPlan."""

from __future__ import annotations

import argparse
import json
import sys

from hub.cli.common import Parents, current_engine
from hub.training.plan import TrainingPlan
from slm.command import EXIT_ERROR, add_flags, values
from slm.errors import SLMError

LOSSES = ("train_loss", "val_loss")  # fields of a round-done event


DESCRIPTION = """Train a domain's connected nodes together on Flower: each round sends the
domain's global model to its nodes, each trains --local-steps steps on its own data (which never
leaves it) and sends weights back; updates with NaN/Inf, wrong shapes or outlying norms are
rejected, the rest aggregated, stored in <home>/models/<domain>/, adopted by the nodes and
credited in the ledger. Runs beside `slm-hub serve`, on the hub's machine."""


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    summary = "run federated training rounds for one domain"
    p = sub.add_parser("train", parents=[parents.home], help=summary, description=DESCRIPTION)
    p.add_argument("--domain", required=True, help="the domain whose nodes train (only those)")
    add_flags(p, TrainingPlan, only=("rounds", "local_steps", "strategy", "min_nodes",
                                     "small_fedavg", "round_timeout", "reward"))  # fmt: skip
    p.add_argument(
        "--check", action="store_true",
        help="train nothing: say how many of the domain's nodes are ready to train now, and "
        "exit 0 if at least --min-nodes are and they share a base (1 if not)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="progress (or the check) as JSON lines")
    p.set_defaults(run=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from hub.training.superlink import running_control_client, served_db_url

    running_control_client(args.home).close()  # a one-line error when no hub serves from there
    plan = TrainingPlan(**values(TrainingPlan, args))  # --domain is a field too
    args.db = args.db or served_db_url(args.home)  # the registry the serving hub writes
    if args.check:
        return _check(args, plan)
    return _run(args, plan)


def _check(args: argparse.Namespace, plan: TrainingPlan) -> int:
    from hub.training.runs import readiness

    ready = readiness(args.home, lambda: current_engine(args), plan.domain)
    refusals = [r for r in (ready.shortfall(plan.min_nodes), ready.mixed_bases()) if r]
    if args.json:
        print(json.dumps({"domain": plan.domain, "ready": sorted(ready.ready.values()),
                          "not_ready": ready.not_ready, "min_nodes": plan.min_nodes,
                          "bases": ready.bases(), "refused": refusals}))  # fmt: skip
    else:
        print(f"{len(ready.ready)} {plan.domain} node(s) ready to train"
              + "".join(f"\n  not ready: {n}" for n in ready.not_ready))  # fmt: skip
    for refusal in refusals:
        print(f"slm-hub: {refusal}", file=sys.stderr)
    return EXIT_ERROR if refusals else 0


def _run(args: argparse.Namespace, plan: TrainingPlan) -> int:
    from hub.training.runs import follow, start

    client, run_id, plan = start(args.home, lambda: current_engine(args), plan)
    if not args.json:
        print(f"run {run_id}: {plan.rounds} {plan.strategy} round(s) of {plan.local_steps} local "
              f"steps on {len(plan.members)} {plan.domain} node(s)", file=sys.stderr)  # fmt: skip
    show = (lambda e: print(json.dumps(e), flush=True)) if args.json else _show_training_event
    try:
        outcome = follow(client, args.home, run_id, show)
    finally:
        client.close()
    if not outcome.ok:
        raise SLMError(f"run {run_id} failed: {outcome.reason}")
    if not args.json:
        print(f"run {run_id}: done; `slm-hub nodes` shows the versions the nodes serve",
              file=sys.stderr)  # fmt: skip
    return 0


def _show_rejected(event: dict) -> None:
    for r in event["rejected"]:
        print(f"  rejected {r['node'][:12]}: {r['reason']}", file=sys.stderr)


def _show_training_event(event: dict) -> None:
    kind = event["event"]
    if kind == "initial":
        print(f"starting from {event['source']}", file=sys.stderr)
    elif kind == "round-started":
        print(f"round {event['round']}: training on {len(event['nodes'])} node(s) ...",
              file=sys.stderr, flush=True)  # fmt: skip
    elif kind == "round-done":
        loss = {k: "-" if event[k] is None else f"{event[k]:.4f}" for k in LOSSES}
        print(f"round {event['round']}: {len(event['participants'])} participant(s), "
              f"{len(event['rejected'])} rejected, train loss {loss['train_loss']}, "
              f"validation loss {loss['val_loss']}, global {event['weights_sha256'][:16]}",
              file=sys.stderr, flush=True)  # fmt: skip
        _show_rejected(event)
    elif kind == "round-failed":
        _show_rejected(event)
