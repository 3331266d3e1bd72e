"""Synthetic players for a demo or a test: levels and activity over the last days, written
through the store's own write path, so events and activity counts are what real traffic makes.

The model, kept simple but shaped like a real game's numbers:
- players arrive over the period, more of them in the first days (a launch), then steadily;
- each day a player comes back with a probability that fades with the days since they
  arrived, and some quit for good, more often right after failing a hard level;
- an active day has one to four sessions, at hours that follow a day's rhythm (evenings busy,
  nights quiet), each with a few attempts: an ordinary level is passed most of the time, every
  tenth level is a hard one that many fail several times: the funnel shows the walls.
Deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .history import SECONDS_PER_DAY, SECONDS_PER_HOUR

GAME_LEVELS = 200
HARD_LEVEL_EVERY = 10
WRITE_BATCH = 2000  # updates per transaction while seeding
# Relative activity per UTC hour of the day: quiet nights, busy evenings.
HOUR_WEIGHTS = [2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 6, 6, 6, 7, 8, 10, 11, 11, 10, 7, 4]


@dataclass(frozen=True)
class DemoPlan:
    players: int = 1000
    days: int = 30
    seed: int = 1


def _sessions_of_player(rng: random.Random, start: int, now: int, days: int) -> Iterator[int]:
    """Unix times of the player's sessions, from their arrival until they quit or `now`."""
    first_day = start // SECONDS_PER_DAY
    last_day = now // SECONDS_PER_DAY
    fade = rng.uniform(3, 20)  # days over which the wish to come back halves, roughly
    for day in range(first_day, min(last_day, first_day + days) + 1):
        age = day - first_day
        if age and rng.random() > 0.15 + 0.75 * math.exp(-age / fade):
            continue
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            hour = rng.choices(range(24), HOUR_WEIGHTS)[0]
            moment = day * SECONDS_PER_DAY + hour * SECONDS_PER_HOUR + rng.randrange(3600)
            if start <= moment <= now:
                yield moment


def demo_updates(plan: DemoPlan, now: int) -> list[tuple[str, int, int]]:
    """(device id, level sent, unix time) for every update of every player, in time order."""
    rng = random.Random(plan.seed)
    begin = now - plan.days * SECONDS_PER_DAY
    updates: list[tuple[str, int, int]] = []
    for _ in range(plan.players):
        device_id = f"demo-{rng.getrandbits(48):012x}"
        # A launch: a third of the players arrive in the first tenth of the period.
        share = rng.random() * 0.1 if rng.random() < 0.33 else rng.random()
        start = begin + int(share * plan.days * SECONDS_PER_DAY)
        skill = rng.uniform(0.5, 1.0)
        level = 0
        quit_after_wall = rng.uniform(0.05, 0.3)
        for moment in sorted(_sessions_of_player(rng, start, now, plan.days)):
            attempts = rng.randint(1, 6)
            failed_wall = False
            for attempt in range(attempts):
                if level >= GAME_LEVELS:
                    break
                hard = (level + 1) % HARD_LEVEL_EVERY == 0
                if rng.random() < (skill * 0.45 if hard else 0.6 + skill * 0.35):
                    level += 1
                else:
                    failed_wall = failed_wall or hard
                # The client reports the level it is on after each attempt, passed or not.
                updates.append((device_id, level, min(now, moment + attempt * 90)))
            if failed_wall and rng.random() < quit_after_wall:
                break
    updates.sort(key=lambda update: update[2])
    return updates


def seed_demo(store, plan: DemoPlan, now: int) -> tuple[int, int]:
    """Write the plan's updates through `store.record_levels`; return (players, updates)."""
    updates = demo_updates(plan, now)
    for i in range(0, len(updates), WRITE_BATCH):
        store.record_levels(updates[i : i + WRITE_BATCH])
    return len({device for device, _, _ in updates}), len(updates)
