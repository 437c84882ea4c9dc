"""Candidate prediction: which nodes' domain profiles are closest to a prompt.

Profiles are kept column-major (PROFILE_DIM x nodes), so scoring a prompt reads only the rows
of its non-zero features: a prompt vector has a few dozen non-zeros out of 4,096, and the cost
is that many contiguous rows instead of the whole matrix (docs/benchmarks.md: under 1 ms for
10,000 nodes). Adding and removing nodes rebuilds nothing but one column.
"""

from __future__ import annotations

import numpy as np

from slm.profile import PROFILE_DIM


class ProfileIndex:
    def __init__(self, capacity: int = 64) -> None:
        self._matrix = np.zeros((PROFILE_DIM, capacity), dtype=np.float32)
        self._ids: list[str] = []
        self._slot: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._slot

    def put(self, node_id: str, profile: np.ndarray) -> None:
        """Add a node or replace its profile (normalised here, so any scale is accepted)."""
        vector = np.asarray(profile, dtype=np.float32)
        if vector.shape != (PROFILE_DIM,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"a profile must be {PROFILE_DIM} finite floats")
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm > 0 else vector
        slot = self._slot.get(node_id)
        if slot is None:
            slot = len(self._ids)
            if slot == self._matrix.shape[1]:
                grown = np.zeros((PROFILE_DIM, 2 * slot), dtype=np.float32)
                grown[:, :slot] = self._matrix
                self._matrix = grown
            self._ids.append(node_id)
            self._slot[node_id] = slot
        self._matrix[:, slot] = vector

    def remove(self, node_id: str) -> None:
        """Drop a node; the last column moves into its slot."""
        slot = self._slot.pop(node_id, None)
        if slot is None:
            return
        last = len(self._ids) - 1
        if slot != last:
            moved = self._ids[last]
            self._matrix[:, slot] = self._matrix[:, last]
            self._ids[slot] = moved
            self._slot[moved] = slot
        self._matrix[:, last] = 0.0
        self._ids.pop()

    def top(self, prompt_vector: np.ndarray, m: int) -> list[tuple[str, float]]:
        """The m nodes with the highest cosine to the prompt, best first (all if fewer)."""
        n = len(self._ids)
        if n == 0 or m <= 0:
            return []
        rows = np.flatnonzero(prompt_vector)
        if rows.size == 0:  # a prompt with no words: every node is as good a candidate
            return [(node, 0.0) for node in self._ids[:m]]
        scores = prompt_vector[rows].astype(np.float32) @ self._matrix[rows, :n]
        if m >= n:
            order = np.argsort(-scores, kind="stable")
        else:
            best = np.argpartition(-scores, m)[:m]
            order = best[np.argsort(-scores[best], kind="stable")]
        return [(self._ids[i], float(scores[i])) for i in order]
