"""The task queue against a plain model of its rule: highest priority first, oldest first within a priority, every
10th pop the oldest task whatever its priority; re-pushed and cancelled tasks never come out stale or twice, and
pruning drops only stale items."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmqgrid.master.taskqueue import AGING_EVERY, TaskQueue

# push(task, priority): queue it anew (a retry: new order) or at its old place (a skipped task: same order)
OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 19), st.sampled_from([0, 0, 0, 5, -3]), st.booleans()),
    st.tuples(st.just("pop")),
    st.tuples(st.just("cancel"), st.integers(0, 19)),
    st.tuples(st.just("prune")),
), min_size=40, max_size=300)


@settings(max_examples=100, deadline=None)   # each example is up to 300 operations
@given(OPS)
@example([("push", 0, 0, False)] + [("push", i, 5, False) for i in range(1, 13)] + [("pop",)] * 13)
def test_the_queue_pops_what_the_rule_says(ops):
    gen: dict[str, int] = {}
    queued: dict[str, tuple[int, int]] = {}      # the model: task -> (priority, order) of its live push
    orders: dict[str, int] = {}
    queue = TaskQueue(lambda task, g: task in queued and gen[task] == g)
    seq = pops = 0
    for op in ops:
        if op[0] == "push":
            task, priority, keep_place = f"t{op[1]}", op[2], op[3]
            if not (keep_place and task in orders):
                seq += 1
                orders[task] = seq
            gen[task] = gen.get(task, 0) + 1
            queued[task] = (priority, orders[task])
            queue.push(priority, orders[task], gen[task], task)
        elif op[0] == "cancel":
            task = f"t{op[1]}"
            queued.pop(task, None)
            gen[task] = gen.get(task, 0) + 1
        elif op[0] == "prune":   # drops stale items only: what comes out next is unchanged
            queue.prune()
            assert len(queue) == len(queued)
        else:
            pops += 1
            if not queued:
                expected = None
            elif pops % AGING_EVERY == 0:
                expected = min(queued, key=lambda t: queued[t][1])
            else:
                expected = min(queued, key=lambda t: (-queued[t][0], queued[t][1]))
            assert queue.pop() == expected
            queued.pop(expected, None)
            if expected is not None:
                gen[expected] += 1   # taken out, as dispatch does
        assert bool(queue) or not queued
