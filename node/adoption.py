"""Hot-swapping the served model when the training plane adopts a new global one.

The ClientApp (another process) rewrites the model folder with config.json last; this watcher
sees config.json change, loads the folder in a worker thread, and swaps the NodeService's model
between requests: a request holds the model it started with to its end, so answers being
streamed are never cut. A folder that fails to load, or now names another domain, is logged
and the current model kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from node.service import NodeService
from slm.errors import SLMError
from slm.model_folder import CONFIG, LoadedModel

POLL_S = 1.0


def stamp(folder: Path) -> tuple[int, int, int] | None:
    """config.json's identity: taken before loading, a change during the load is still seen."""
    return _stamp(Path(folder) / CONFIG)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ModelWatcher:
    def __init__(
        self,
        folder: Path,
        load: Callable[[], LoadedModel],
        service: NodeService,
        log: Callable[[str], None],
        on_swap: Callable[[], None] = lambda: None,
        seen: tuple[int, int, int] | None = None,
    ) -> None:
        self.path = Path(folder) / CONFIG
        self.load = load
        self.service = service
        self.log = log
        self.on_swap = on_swap
        self.seen = seen  # config.json as it was before the served model was loaded

    async def watch(self, stop: asyncio.Event) -> None:
        seen = self.seen or _stamp(self.path)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
            now = _stamp(self.path)
            if now is None or now == seen:
                continue
            seen = now
            await self._reload()

    async def _reload(self) -> None:
        old = self.service.loaded
        try:
            new = await asyncio.to_thread(self.load)
        except Exception as exc:  # out of memory, a bad folder: keep serving, keep watching
            why = str(exc) if isinstance(exc, SLMError) else f"{type(exc).__name__}: {exc}"
            self.log(f"model folder changed but does not load ({why}); keeping model {old.version}")
            return
        if new.domain != old.domain:
            self.log(
                f"model folder now holds a {new.domain} model, not {old.domain}; "
                f"keeping model {old.version}"
            )
            return
        try:  # the same version too: its calibration may be the new part
            await asyncio.to_thread(self.service.swap, new)
        except Exception as exc:
            self.log(f"could not measure the new model's offsets ({exc}); keeping {old.version}")
            return
        if new.version == old.version:
            self.log(f"reloaded model {new.version}")
        else:
            self.log(f"adopted model {new.version} (was {old.version})")
            self.on_swap()
