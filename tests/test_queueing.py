"""The model queue's policy, on a manual clock and a model call the test releases: batches form while the copies are
busy, and a request is refused only when its own expected wait, at the measured rate, is past the budget."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from skinserve.serve.queueing import ModelQueue, Overloaded, ServiceRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HeldModel:
    """A model call that returns each image's pixel sum, and ends only when the test releases it, `seconds` later."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[int] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return images.reshape(len(images), -1).sum(axis=1, keepdims=True)

    async def release(self, seconds: float) -> None:
        """Let the oldest unfinished call end after `seconds` on the clock."""
        self.clock.now += seconds
        self.gates.pop(0).set()
        await settle()


async def settle() -> None:
    """Let every ready task run: submits enqueue, calls start, finished calls hand out their rows."""
    for _ in range(10):
        await asyncio.sleep(0)


def image(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 3, 2, 2), value, np.float32)


async def measured(queue: ModelQueue, model: HeldModel, seconds_per_image: float) -> None:
    """One call of one image taking `seconds_per_image`: the rate becomes known."""
    task = asyncio.ensure_future(queue.submit(image(1)))
    await settle()
    await model.release(seconds_per_image)
    await task


def test_the_service_rate_is_images_per_busy_second_and_forgets_idle_time():
    clock = Clock()
    rate = ServiceRate(window_s=10.0, clock=clock)
    assert rate.images_per_s is None
    rate.started()
    clock.now += 0.5
    rate.finished(5)
    assert rate.images_per_s == pytest.approx(10.0)
    clock.now += 30.0  # idle: no busy time added, both sums decay alike
    assert rate.images_per_s == pytest.approx(10.0)


def test_nothing_is_refused_before_the_rate_is_known():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        queue = ModelQueue(model, copies=1, max_batch_size=8, budget_s=0.001, clock=clock)
        tasks = [asyncio.ensure_future(queue.submit(image(i))) for i in range(5)]
        await settle()
        assert queue.shed == 0 and queue.backlog == 5
        await model.release(0.1)
        await model.release(0.1)
        assert [float(t.result()[0, 0]) for t in tasks] == [12.0 * i for i in range(5)]

    asyncio.run(scenario())


def test_a_request_is_refused_only_when_its_own_expected_wait_is_past_the_budget():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        shed: list[float] = []
        backlog: list[int] = []
        queue = ModelQueue(
            model,
            copies=1,
            max_batch_size=8,
            budget_s=0.35,
            on_shed=shed.append,
            on_backlog=backlog.append,
            clock=clock,
        )
        await measured(queue, model, 0.1)  # 10 images/s
        admitted = [asyncio.ensure_future(queue.submit(image(1))) for _ in range(3)]  # waits of 0.1, 0.2, 0.3 s
        await settle()
        with pytest.raises(Overloaded, match="expected wait 0.4 s"):
            await queue.submit(image(1))  # 0.4 s > 0.35 s
        assert shed == [pytest.approx(0.4)] and queue.shed == 1
        with pytest.raises(Overloaded):
            await queue.submit(image(1, n=2))  # a batch request counts its images
        await model.release(0.1)  # the first of the three ran alone (the copy was idle)...
        assert model.calls == [1, 1, 2]  # ...the two others queued behind it and now run together
        await model.release(0.2)
        assert all(t.done() and not t.cancelled() for t in admitted)
        assert queue.backlog == 0 and backlog[-1] == 0 and max(backlog) == 3

    asyncio.run(scenario())


def test_batches_form_while_the_copies_are_busy_up_to_the_batch_size():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        queue = ModelQueue(model, copies=2, max_batch_size=4, budget_s=60.0, clock=clock)
        tasks = [asyncio.ensure_future(queue.submit(image(i))) for i in range(11)]
        await settle()
        assert model.calls == [1, 1]  # two idle copies: two calls at once, none corked
        await model.release(0.1)
        assert model.calls == [1, 1, 4]  # a copy freed: it takes the queue, up to 4 images
        for _ in range(4):
            await model.release(0.1)
        assert model.calls == [1, 1, 4, 4, 1] and all(t.done() for t in tasks)
        assert [float(t.result()[0, 0]) for t in tasks] == [12.0 * i for i in range(11)]

    asyncio.run(scenario())


def test_without_local_copies_every_admitted_call_goes_out_at_once():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        queue = ModelQueue(model, copies=None, max_batch_size=64, budget_s=0.25, clock=clock)
        await measured(queue, model, 0.1)
        tasks = [asyncio.ensure_future(queue.submit(image(1))) for _ in range(2)]
        await settle()
        assert model.calls == [1, 1, 1] and queue.backlog == 2
        with pytest.raises(Overloaded):
            await queue.submit(image(1))  # (2 in the model + 1) / 10 per s = 0.3 s > 0.25 s
        await model.release(0.1)
        await model.release(0.1)
        assert all(t.done() for t in tasks)

    asyncio.run(scenario())


def test_overload_is_timed_from_the_first_refusal_and_ends_a_second_after_the_last():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        queue = ModelQueue(model, copies=1, max_batch_size=1, budget_s=0.15, clock=clock)
        await measured(queue, model, 0.1)
        task = asyncio.ensure_future(queue.submit(image(1)))
        await settle()
        assert queue.overloaded_for_s() == 0.0
        for _ in range(4):  # refused every 0.5 s: one spell
            with pytest.raises(Overloaded):
                await queue.submit(image(1))
            clock.now += 0.5
        assert queue.overloaded_for_s() == pytest.approx(2.0)
        clock.now += 1.0  # no refusal for 1.5 s: the spell is over
        assert queue.overloaded_for_s() == 0.0
        await model.release(0.1)
        await task

    asyncio.run(scenario())


def test_a_failed_call_fails_each_of_its_callers_and_the_queue_goes_on():
    async def scenario() -> None:
        calls = 0

        async def flaky(images: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("the runtime failed")
            return images.reshape(len(images), -1).sum(axis=1, keepdims=True)

        queue = ModelQueue(flaky, copies=1, max_batch_size=8, budget_s=1.0)
        with pytest.raises(RuntimeError, match="the runtime failed"):
            await queue.submit(image(1))
        assert float((await queue.submit(image(2)))[0, 0]) == 24.0

    asyncio.run(scenario())


def test_a_request_is_admitted_before_its_decode_and_counted_while_it_decodes():
    async def scenario() -> None:
        clock = Clock()
        model = HeldModel(clock)
        queue = ModelQueue(model, copies=1, max_batch_size=8, budget_s=0.25, clock=clock)
        await measured(queue, model, 0.1)  # 10 images/s
        with queue.admitted(1) as ticket:  # nothing ahead: admitted
            assert queue.backlog == 1 and queue.images_decoding == 1
            # (1 decoding + 2) / 10 per s: refused before its own decode
            with pytest.raises(Overloaded, match="expected wait 0.3 s"), queue.admitted(2):
                pass
            with queue.admitted(1):  # (1 + 1) / 10 per s = 0.2 s
                assert queue.backlog == 2
            assert queue.backlog == 1  # a request that failed its decode is taken back out
            task = asyncio.ensure_future(queue.submit(image(1), ticket))
            await settle()
            assert (queue.images_decoding, queue.images_in_model) == (0, 1)  # moved, not counted twice
        assert queue.backlog == 1 and queue.shed == 1
        await model.release(0.1)
        await task
        assert queue.backlog == 0

    asyncio.run(scenario())
