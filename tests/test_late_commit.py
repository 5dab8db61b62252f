"""A create the server commits after the client gave up on it is found, never paid twice.

The simulator holds every create ``HOLD`` seconds (``EndpointFaults.hold``) and commits it
whether or not the client still waits. The client gives up ``GIVE_UP`` seconds after sending
(Ctrl-C on a batch, a timeout around a library call), and the server commits the create
``HOLD - GIVE_UP`` seconds later: more than ``visibility_lag`` after it was sent, less than
``visibility_lag`` after the client gave up. That is the README's promise: ``visibility_lag``
"covers ... the server's own processing of a request the client gave up on", so absence may
only be proven ``visibility_lag`` after the moment the client stopped sending, not after the
moment it first sent. Time is virtual: one ``ManualClock`` for the simulator, the client's
retries and the batch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import until
from vidu_async.batch import BatchOptions, BatchSubmitter
from vidu_async.client import ViduClient
from vidu_async.jobs import Job
from vidu_async.outcome import Outcome
from vidu_async.requests import ReferenceToVideoRequest
from vidu_async.retry import RetryPolicy
from vidu_async.tasks import Task
from vidu_async.testing import EndpointFaults, FakeVidu, Faults, ManualClock, SimTask

VISIBILITY_LAG = 10.0
"""What the client is told the list may lag behind a create it stopped sending."""
HOLD = 15.0
"""Seconds the server takes to commit a create: longer than the lag."""
GIVE_UP = 10.0
"""Seconds after sending that the client gives up: the commit lands within the lag of it."""
FAULTS = Faults(create=EndpointFaults(hold=HOLD))
REQUEST = ReferenceToVideoRequest("viduq2", "a lighthouse at dusk",
                                  images=("https://example.com/ref.png",), duration=5)
KEY = "0123456789abcdef0123456789abcdef"


async def settle(sim: FakeVidu, clock: ManualClock, call: asyncio.Task[Any]) -> None:
    """Let ``call`` (the second try) end; a create it sends again is held too, so the clock
    is moved past that hold for it to be answered (and counted) instead of hanging."""
    await until(lambda: call.done() or sim.stats.faults["hold"] > 1)
    if not call.done():
        clock.advance(HOLD)
    await asyncio.wait([call])


def the_one_task(sim: FakeVidu, sent: float, gave_up: float) -> SimTask:
    """The only task, checked to be what the test plays: committed once, after the client gave
    up, later than the lag after the sending and within the lag of the giving up."""
    assert sim.stats.duplicate_payloads() == {}
    [task] = sim.tasks.values()
    assert sent + VISIBILITY_LAG < task.created_at < gave_up + VISIBILITY_LAG
    return task


async def run(sim: FakeVidu, clock: ManualClock, journal: Path) -> list[Outcome]:
    """One run of the batch ``named`` to its submission, every wait on ``clock``."""
    policy = RetryPolicy(sleep=clock.sleep, clock=clock, visibility_lag=VISIBILITY_LAG)
    options = BatchOptions(journal=journal, batch_id="named", clock=clock, sleep=clock.sleep)
    async with ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client:
        return [o async for o in BatchSubmitter(client, options).run([Job("job", REQUEST)])]


async def test_a_rerun_at_once_finds_the_create_committed_after_the_run_was_stopped(
    tmp_path: Path,
) -> None:
    """The run is stopped (Ctrl-C) while its create is held; rerun at once with the same
    journal, it must wait out the lag from the stop, find the task and send nothing."""
    clock = ManualClock(now=1000.0)
    journal = tmp_path / "named.journal.jsonl"
    async with FakeVidu(clock=clock, faults=FAULTS) as sim:
        first = asyncio.create_task(run(sim, clock, journal))
        await until(lambda: sim.simulation.held == 1)
        sent = clock.now
        clock.advance(GIVE_UP)
        first.cancel()  # Ctrl-C while the create is on the server
        with pytest.raises(asyncio.CancelledError):
            await first
        gave_up = clock.now
        assert sim.tasks == {}
        again = asyncio.create_task(run(sim, clock, journal))
        await settle(sim, clock, again)
        task = the_one_task(sim, sent, gave_up)
        outcomes = again.result()
    assert [(o.status, o.task_id) for o in outcomes] == [("submitted", task.task_id)]
    assert sim.stats.requests_to("create") == 1


async def test_a_create_called_again_after_a_timeout_finds_the_task_committed_since() -> None:
    """A timeout around ``create`` expires while the server holds it; ``create`` again with
    the same key must look until the lag after the timeout, and return that task."""
    clock = ManualClock(now=1000.0)
    policy = RetryPolicy(sleep=clock.sleep, clock=clock, visibility_lag=VISIBILITY_LAG)
    deadline = asyncio.timeout(None)

    async def create_within_deadline() -> Task:
        async with deadline:
            return await client.create(REQUEST, correlation_key=KEY)

    async with (
        FakeVidu(clock=clock, faults=FAULTS) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client,
    ):
        first = asyncio.create_task(create_within_deadline())
        await until(lambda: sim.simulation.held == 1)
        sent = clock.now
        clock.advance(GIVE_UP)
        deadline.reschedule(asyncio.get_running_loop().time())  # the timeout expires
        with pytest.raises(TimeoutError):
            await first
        gave_up = clock.now
        assert sim.tasks == {}
        again = asyncio.create_task(client.create(REQUEST, correlation_key=KEY))
        await settle(sim, clock, again)
        made = the_one_task(sim, sent, gave_up)
        assert again.result().task_id == made.task_id
    assert sim.stats.requests_to("create") == 1


@pytest.mark.parametrize("again", ["find_task_by_correlation_key", "create"])
async def test_a_commit_after_the_give_up_is_found_once_the_server_clock_is_known(
    again: str,
) -> None:
    """The README's pattern in a client that already knows the server's clock (its windows
    start just before their creates): a 1 s timeout around ``create``, the server commits 2 s
    later (within the lag). The lookup's window runs to the server's now, so it lists the task:
    ``find_task_by_correlation_key`` returns it, ``create`` again returns it, nothing is paid
    twice."""
    clock = ManualClock(now=1000.0)
    policy = RetryPolicy(sleep=clock.sleep, clock=clock, visibility_lag=8.0)
    deadline = asyncio.timeout(None)

    async def create_within_deadline() -> Task:
        async with deadline:
            return await client.create(REQUEST, correlation_key=KEY)

    async with (
        FakeVidu(clock=clock, faults=Faults(create=EndpointFaults(hold=3.0))) as sim,
        ViduClient(sim.api_key, base_url=sim.url, retry=policy) as client,
    ):
        await client.get_credits()  # any earlier call: the server's clock is learned
        clock.advance(1.0)  # the create's readings are taken after: the clock vouches for them
        first = asyncio.create_task(create_within_deadline())
        await until(lambda: sim.simulation.held == 1)
        sent = clock.now
        clock.advance(1.0)
        deadline.reschedule(asyncio.get_running_loop().time())  # the timeout expires
        with pytest.raises(TimeoutError):
            await first
        gave_up = clock.now
        if again == "create":
            call = asyncio.create_task(client.create(REQUEST, correlation_key=KEY))
            await settle(sim, clock, call)
            found = call.result().task_id
        else:
            result = await client.find_task_by_correlation_key(KEY)
            found = result.id if result is not None else None
        assert sim.stats.duplicate_payloads() == {}
        [task] = sim.tasks.values()
    assert task.created_at == sent + 3.0 > gave_up + 1.0  # past the slack of the give-up
    assert found == task.task_id
    assert sim.stats.requests_to("create") == 1
