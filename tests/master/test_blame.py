"""Which running tasks a worker's death counts against (docs/architecture.md, Task state machine): every task the
first time, then the repeat suspects only, and of equal suspects the ones started last."""
from __future__ import annotations

from zmqgrid.master.blame import SAME_START_S, Suspect, blamed


def test_a_worker_that_died_running_nothing_blames_nothing():
    assert blamed([]) == set()


def test_a_task_running_alone_takes_every_death_of_its_worker():
    assert blamed([Suspect("long", 0, 10.0)]) == {"long"}
    assert blamed([Suspect("long", 2, 10.0)]) == {"long"}


def test_a_first_death_counts_for_every_task_the_worker_was_running_whatever_their_start_order():
    # A task that kills its worker late (a leak, a crash after minutes of work) started before its neighbours
    running = [Suspect("late-poison", 0, 10.0), Suspect("short-1", 0, 14.0), Suspect("short-2", 0, 14.9)]
    assert blamed(running) == {"late-poison", "short-1", "short-2"}


def test_a_repeat_suspect_takes_the_death_alone_though_others_started_after_it():
    running = [Suspect("late-poison", 1, 10.0), Suspect("bystander", 0, 14.9)]
    assert blamed(running) == {"late-poison"}


def test_a_bystander_with_a_death_from_earlier_is_not_blamed_beside_a_task_with_more():
    running = [Suspect("poison", 2, 10.0), Suspect("met-it-once", 1, 10.0 + SAME_START_S / 2)]
    assert blamed(running) == {"poison"}


def test_of_equal_suspects_only_those_started_last_are_blamed():
    # A poison task that kills at once, re-dispatched beside a long task that was present at its first death
    running = [Suspect("long", 1, 10.0), Suspect("poison", 1, 12.0), Suspect("same-turn", 1, 12.0 - SAME_START_S)]
    assert blamed(running) == {"poison", "same-turn"}


def test_a_start_not_yet_known_counts_as_the_earliest():
    # started_at None: a task the master took as running from a ledger row without its start time
    running = [Suspect("unknown-start", 1, None), Suspect("known", 1, 5.0)]
    assert blamed(running) == {"known"}
