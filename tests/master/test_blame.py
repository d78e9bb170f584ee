"""Which running tasks a worker's death counts against (docs/architecture.md, Task state machine): the tasks started
last at once; one started before them is noted the first time and counts from its second such death, with the noted
one."""
from __future__ import annotations

from zmqgrid.master.blame import AGAIN, LAST, NOTED, SAME_START_S, Suspect, before_count, blamed, with_death


def test_a_worker_that_died_running_nothing_blames_nothing():
    assert blamed([]) == {}


def test_a_task_running_alone_counts_every_death_of_its_worker():
    assert blamed([Suspect("long", 10.0, 0)]) == {"long": LAST}


def test_the_tasks_started_last_are_blamed_and_one_started_before_them_is_noted_the_first_time():
    # A poison task that kills at once started last; a neighbour started before it is a bystander so far
    running = [Suspect("bystander", 10.0, 0), Suspect("poison", 14.9, 0), Suspect("same-turn", 14.9 - SAME_START_S, 0)]
    assert blamed(running) == {"bystander": NOTED, "poison": LAST, "same-turn": LAST}


def test_a_task_started_before_the_others_counts_from_its_second_such_death_with_the_noted_one():
    # A task that kills its worker late (a leak, a crash after minutes of work): short tasks keep starting after it
    evidence, deaths = [], 0
    for n, started in enumerate((10.0, 20.0, 30.0)):
        verdict = blamed([Suspect("late", started, before_count(evidence)), Suspect("short", started + 4, 0)])
        assert verdict["short"] == LAST
        evidence, counted = with_death(evidence, verdict["late"], {"attempt": n + 1})
        deaths += counted
        assert (verdict["late"], deaths) == [(NOTED, 0), (AGAIN, 2), (AGAIN, 3)][n]
    assert [(e["attempt"], e["started_last"], e["counted"]) for e in evidence] == \
        [(1, False, True), (2, False, True), (3, False, True)]


def test_a_bystander_that_follows_a_poison_task_around_counts_only_the_deaths_it_started_with_it():
    # Noted at the poison's first death (it had started before it), then re-queued with it and started beside it
    evidence, deaths = with_death([], NOTED, {"attempt": 1})
    for attempt in (2, 3):
        assert blamed([Suspect("bystander", 5.0, before_count(evidence)), Suspect("poison", 5.01, 0)]) == \
            {"bystander": LAST, "poison": LAST}
        evidence, counted = with_death(evidence, LAST, {"attempt": attempt})
        deaths += counted
    assert deaths == 2 and [e["counted"] for e in evidence] == [False, True, True]


def test_evidence_older_than_this_rule_counts_as_deaths_started_last():
    assert before_count([{"attempt": 1, "device_id": "w1", "reason": "gone", "at": 1.0}]) == 0


def test_a_start_not_yet_known_counts_as_the_earliest():
    # started_at None: a task the master took as running from a ledger row without its start time
    running = [Suspect("unknown-start", None, 0), Suspect("known", 5.0, 0)]
    assert blamed(running) == {"unknown-start": NOTED, "known": LAST}
