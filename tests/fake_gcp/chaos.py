"""Random faults for many-seed runs (benchmarks/exactly_once.py): transient errors before a request is applied
(429, 500, 503: Google applied nothing) and lost answers after a mutating request is applied (a 503 or a reset
connection after the commit). Set `fake.chaos = Chaos(seed)`."""

from __future__ import annotations

import random
import threading

from tests.fake_gcp.server import ApiError


class Chaos:
    def __init__(self, seed: int, *, transient_rate: float = 0.05, lost_rate: float = 0.1) -> None:
        self.rng = random.Random(seed)
        self.transient_rate = transient_rate
        self.lost_rate = lost_rate
        self.lock = threading.Lock()
        self.transient = 0
        self.lost = 0

    def before(self, api: str, method: str, path: str) -> None:
        with self.lock:
            if self.rng.random() >= self.transient_rate:
                return
            self.transient += 1
            status = self.rng.choice((429, 500, 503))
        raise ApiError(status, "Injected transient error.")

    def lose_answer(self, api: str, method: str, path: str) -> str | None:
        with self.lock:
            if self.rng.random() >= self.lost_rate:
                return None
            self.lost += 1
            return self.rng.choice(("503", "reset"))
