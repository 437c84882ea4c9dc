"""`slm-hub train`: check the domain's nodes, submit a run to the SuperLink, follow it.

Runs on the hub's machine beside `slm-hub serve`: it reads the registry for the domain's nodes
and their Flower ids, asks the SuperLink (through its Control API) which are online, submits
the app bundle with the plan as run config, then shows the run's progress events until Flower
reports the run finished. Ctrl-C stops the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from hub.storage.registry import NodeRegistry
from hub.training.plan import TrainingError, TrainingPlan
from hub.training.run_files import events_path, read_events
from hub.training.superlink import running_control_client
from protos import training_app

POLL_S = 0.5
START_TIMEOUT_S = 120.0  # a run still pending after this long has no SuperExec to run it


@dataclass(frozen=True)
class Outcome:
    run_id: int
    ok: bool
    reason: str  # why it failed; "" when it completed


@contextlib.contextmanager
def plane_errors() -> Iterator[None]:
    """The Control API's HTTP failures as one-line TrainingErrors (a hub that went away, a
    refusal), not tracebacks."""
    import httpx

    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise TrainingError(
            f"the training plane refused: HTTP {exc.response.status_code} {exc.response.text[:200]}"
        ) from None
    except httpx.HTTPError as exc:
        raise TrainingError(
            f"the training plane does not answer ({type(exc).__name__}); is `slm-hub serve` "
            "still running?"
        ) from None


def _connect(home: Path):  # type: ignore[no-untyped-def]
    import httpx

    client = running_control_client(home)
    try:
        from flwr.proto.control_pb2 import ListNodesRequest

        nodes = client.ListNodes(ListNodesRequest()).nodes_info
    except httpx.HTTPError:
        client.close()
        raise TrainingError(
            f"the hub serving from {home} does not answer on its training plane; is "
            "`slm-hub serve` running?"
        ) from None
    return client, {int(n.node_id): n.status for n in nodes}


@dataclass(frozen=True)
class Readiness:
    """Which of a domain's admitted nodes can train now (Flower id -> node id), and why the
    others cannot; and what each ready node's model is (`kinds`: node id -> (base sha256, ""
    for a whole model; preset))."""

    domain: str
    ready: dict[int, str]
    not_ready: list[str]  # "<node id prefix> (<why>)"
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)

    def shortfall(self, min_nodes: int) -> str | None:
        """Why a run needing `min_nodes` cannot start; None when it can."""
        if len(self.ready) >= min_nodes:
            return None
        known = len(self.ready) + len(self.not_ready)
        detail = f"; not connected: {', '.join(self.not_ready)}" if self.not_ready else ""
        return (
            f"{len(self.ready)} {self.domain} node(s) connected for training, fewer than "
            f"--min-nodes {min_nodes} ({known} {self.domain} node(s) joined){detail}"
        )

    def bases(self) -> dict[str, list[str]]:
        """The ready nodes by the base their model adapts ("": whole models), largest group
        first."""
        groups: dict[str, list[str]] = {}
        for node in sorted(self.ready.values()):
            groups.setdefault(self.kinds.get(node, ("", ""))[0], []).append(node)
        return dict(sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])))

    def mixed_bases(self) -> str | None:
        """Why the ready nodes cannot train together: their models adapt different bases (or
        some are whole models), and a round averages one kind of weights. None when they share
        one. A majority does not outvote the others: which base a domain trains on is the
        operator's choice, not a count of who joined."""
        groups = self.bases()
        if len(groups) < 2:
            return None
        kinds = ", ".join(self._describe(base, nodes) for base, nodes in groups.items())
        return (
            f"{self.domain} nodes do not share a base: {kinds}; a round averages one kind of "
            "weights: train them on one base, or take those of other bases out of the round "
            "(stop their `slm-node join`, or `slm-hub node revoke` them)"
        )

    def _describe(self, base: str, nodes: list[str]) -> str:
        names = [n[:12] for n in nodes]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        if base:
            return f"{listed} adapt{'s' * (len(nodes) == 1)} base {base[:12]}…"
        presets = ", ".join(sorted({self.kinds.get(n, ("", "?"))[1] for n in nodes}))
        whole = "is a whole model" if len(nodes) == 1 else "are whole models"
        return f"{listed} {whole} ({presets})"

    @property
    def base(self) -> str:
        """The base every ready node's model adapts ("": whole models, or no node ready)."""
        groups = self.bases()
        return next(iter(groups)) if len(groups) == 1 else ""


def cohort(engine: Engine, domain: str, online: dict[int, str]) -> Readiness:
    """The domain's registered, unrevoked nodes, split by whether their SuperNode is online."""
    members, offline, kinds = {}, [], {}
    for record in NodeRegistry(engine).all():
        if record.domain != domain or record.revoked:
            continue
        if record.flower_node_id is None:
            offline.append(f"{record.node_id[:12]} (not registered for training yet)")
            continue
        flower_id = int(record.flower_node_id)
        if online.get(flower_id) == "online":
            members[flower_id] = record.node_id
            kinds[record.node_id] = (record.base, record.preset)
        else:
            offline.append(f"{record.node_id[:12]} ({online.get(flower_id, 'unknown')})")
    return Readiness(domain, members, offline, kinds)


def readiness(home: Path, open_engine: Callable[[], Engine], domain: str) -> Readiness:
    """Ask the SuperLink of the hub serving from `home` which of the domain's nodes are online."""
    client, online = _connect(home)
    client.close()
    return cohort(open_engine(), domain, online)


def submit(client: Any, fab: bytes, config: dict[str, Any]) -> int:
    """Start a run of this app bundle with this run config; its run id."""
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    request = StartRunRequest(
        fab=fab_to_proto(Fab(hashlib.sha256(fab).hexdigest(), fab, {})),
        override_config=user_config_to_proto(config),
    )
    return int(client.StartRun(request).run_id)


def wait_finished(client: Any, run_id: int, timeout: float) -> tuple[str, str, str]:
    """Flower's (status, sub-status, details) once the run finished, or TrainingError."""
    deadline = time.monotonic() + timeout
    while (status := _status(client, run_id))[0] != "finished":
        if time.monotonic() > deadline:
            raise TrainingError(f"run {run_id} is still {status[0]} after {timeout:g} s")
        time.sleep(POLL_S)
    return status


def start(
    home: Path, open_engine: Callable[[], Engine], plan: TrainingPlan
) -> tuple[Any, int, TrainingPlan]:
    """Check there are enough nodes and that they share a base, submit; returns (control
    client, run id, final plan: its members and their base).

    The SuperLink is asked first: without a serving hub there is nothing to check or write.
    """
    client, online = _connect(home)
    try:
        ready = cohort(open_engine(), plan.domain, online)
        for refusal in (ready.shortfall(plan.min_nodes), ready.mixed_bases()):
            if refusal is not None:
                raise TrainingError(refusal)
        with plane_errors():
            busy = active_run(client, plan.domain)
        if busy is not None:
            raise TrainingError(
                f"run {busy} is already training {plan.domain}; wait for it to finish (two runs "
                "would write the same nodes' models)"
            )
        members = ",".join(f"{f}={n}" for f, n in sorted(ready.ready.items()))
        plan = replace(plan, node_ids=members, base=ready.base)
        with plane_errors():
            run_id = submit(client, training_app.bundle(), plan.run_config())
    except BaseException:
        client.close()
        raise
    return client, run_id, plan


def active_run(client: Any, domain: str) -> int | None:
    """A run of this app for `domain` that has not finished, if any."""
    from flwr.common.serde import user_config_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest

    for run_id, run in client.ListRuns(ListRunsRequest()).run_dict.items():
        ours = run.fab_id.endswith(f"/{training_app.APP_NAME}")
        if run.status.status == "finished" or not ours:
            continue
        try:
            planned = TrainingPlan.from_run_config(user_config_from_proto(run.override_config))
        except TrainingError:  # not a run this hub started
            continue
        if planned.domain == domain:
            return int(run_id)
    return None


def _status(client: Any, run_id: int) -> tuple[str, str, str]:
    from flwr.proto.control_pb2 import ListRunsRequest

    run = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
    return run.status.status, run.status.sub_status, run.status.details


def follow(client: Any, home: Path, run_id: int, show: Callable[[dict[str, Any]], None]) -> Outcome:
    """Show the run's events as they come, until Flower says it finished."""
    from flwr.proto.control_pb2 import StopRunRequest

    path, offset, failure = events_path(home, run_id), 0, ""
    submitted = time.monotonic()
    try:
        while True:
            with plane_errors():
                status, sub_status, details = _status(client, run_id)
            events, offset = read_events(path, offset)
            for event in events:
                if event["event"] == "failed":
                    failure = event["reason"]
                show(event)
            if status == "finished":
                if sub_status == "completed" and not failure:
                    return Outcome(run_id, True, "")
                return Outcome(run_id, False, failure or details or f"the run {sub_status}")
            if status == "pending" and time.monotonic() - submitted > START_TIMEOUT_S:
                with plane_errors():
                    client.StopRun(StopRunRequest(run_id=run_id))
                return Outcome(
                    run_id,
                    False,
                    f"the run did not start within {START_TIMEOUT_S:g} s; "
                    f"see {home / 'logs' / 'superlink.log'}",
                )
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        try:
            with plane_errors():
                client.StopRun(StopRunRequest(run_id=run_id))
        except TrainingError as exc:
            return Outcome(run_id, False, f"interrupted, and the run could not be stopped: {exc}")
        return Outcome(run_id, False, "stopped (Ctrl-C)")
