"""The training plane's ServerApp process: Flower's SuperExec starts it (`flwr-serverapp`) for
each run `slm-hub train` submits, and it runs the round loop over Flower's transport, recording
and paying every round in the hub's ledger, as the serving hub would.

Here, above the planes, because it is where training meets the ledger: the run config carries
the plan; the hub's home and database come from the environment the hub gives its SuperLink.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hub.config import HubConfig
from hub.ledger.keys import load_public_key, load_signing_key
from hub.ledger.ledger import Ledger
from hub.storage.engine import check_current, make_engine
from hub.training.flower import FlowerCohort
from hub.training.plan import TrainingError, TrainingPlan
from hub.training.rounds import run_rounds
from hub.training.run_files import Events, domain_lock, events_path
from hub.training.store import GlobalStore
from hub.training.superlink import DB_ENV, HOME_ENV

log = logging.getLogger("slm-hub.training")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan = TrainingPlan.from_run_config(dict(context.run_config))
    home = Path(os.environ[HOME_ENV])
    events = Events(events_path(home, context.run_id))
    try:
        cfg = HubConfig.load(home, os.environ.get(DB_ENV) or None)
        engine = make_engine(cfg.db_url)
        check_current(engine)
        ledger = Ledger(engine, load_signing_key(cfg.signing_key_path),
                        load_public_key(cfg.public_key_path), cfg.rewards)  # fmt: skip
        with domain_lock(home, plan.domain):
            run_rounds(plan, context.run_id, FlowerCohort(grid), ledger,
                       GlobalStore(home), events, log=log.warning)  # fmt: skip
    except Exception as exc:
        reason = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
        events.emit("failed", reason=reason)
        raise
