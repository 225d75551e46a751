"""lab.timers: exact, with made-up times."""

from lab.timers import TimerHeap


def test_due_in_deadline_then_scheduling_order():
    heap, fired = TimerHeap(), []
    heap.call_at(2.0, fired.append, "b")
    heap.call_at(1.0, fired.append, "a")
    heap.call_at(2.0, fired.append, "c")
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(0.999) == []
    for h in heap.pop_due(2.0):
        h.run()
    assert fired == ["a", "b", "c"]
    assert heap.next_deadline() is None and len(heap) == 0


def test_cancelled_timers_never_run_and_do_not_pile_up():
    heap = TimerHeap()
    keep = heap.call_at(10.0, lambda: None)
    for i in range(100_000):
        heap.call_at(5.0 + i * 1e-6, lambda: None).cancel()
    assert len(heap) == 1
    assert heap.heap_size < 200  # compacted, not 100,001 entries
    assert heap.next_deadline() == 10.0
    assert heap.pop_due(20.0) == [keep]


def test_cancel_after_pop_is_harmless():
    heap = TimerHeap()
    h = heap.call_at(1.0, lambda: None)
    assert heap.pop_due(1.0) == [h]
    h.cancel()
    assert len(heap) == 0 and heap.heap_size == 0
    heap.call_at(3.0, lambda: None)
    assert len(heap) == 1
