"""Concurrent chat requests discussed together: one worker thread owns the generator (generation is not thread-safe)
and runs every request waiting for it as one `discussion.run` batch.

The worker takes the oldest waiting request, then keeps taking arrivals until `max_batch` requests are in or
`wait_ms` have passed since that oldest one arrived, or since the previous batch ended if it came while that batch
ran: the clients just answered are then back with their next questions in time to join (counting from its arrival
alone, a few queued requests left at once, and batches alternated between large and small). A turn of B requests is
one generator call of B x N rows, which on a CPU costs little more than one request's N rows: that is where the
throughput comes from.

Each request samples with its own seed, whatever batch it lands in: `SeededTurns` gives its rows the seeds
`discussion.run` would give a batch of that one problem with `seed` = the request's seed, so a served reply with seed
S is the discussion `maporl discuss QUESTION seed=S` prints.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from maporl import discussion
from maporl.config import DiscussionConfig
from maporl.generation import Completion, Generator, GenRequest
from maporl.records import Problem, Transcript
from maporl.serving.protocol import answer_json
from maporl.tasks import Task
from maporl.tasks.base import problem_id

log = logging.getLogger("maporl.serve")

Event = tuple  # ("started",) | ("turn", t, [answer json]) | ("done", transcript, usage) | ("error", exception)


class Job:
    """One request waiting for, or in, a batch; `emit` receives its events (from the worker thread)."""

    def __init__(self, question: str, seed: int, emit: Callable[[Event], None]):
        self.question, self.seed, self._emit = question, seed, emit
        self.arrived = time.monotonic()

    def emit(self, event: Event) -> None:
        try:
            self._emit(event)
        except Exception:  # the client's side is gone (its event loop closed): nothing to tell, keep serving
            log.debug("dropped an event for a request whose client is gone", exc_info=True)


class SeededTurns:
    """The generator as one batch sees it: rows sample with seeds from their own request's seed (not from their
    place in the batch), and each finished turn goes to `on_turn(turn, completions)`. Everything else (the token
    count, the weights version) is the wrapped generator's."""

    def __init__(self, generator: Generator, seeds: Sequence[int], num_agents: int, on_turn: Callable):
        self.generator, self.seeds, self.num_agents, self.on_turn = generator, list(seeds), num_agents, on_turn
        self.turn = 0

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        n, t = self.num_agents, self.turn
        rows = []
        for k, r in enumerate(requests):
            # discussion.run lists a turn's rows problem by problem, agent by agent: row k is problem k // n.
            if r.agent != k % n or len(requests) != n * len(self.seeds):
                raise RuntimeError("discussion.run's row order changed; SeededTurns maps rows to requests by it")
            rows.append(GenRequest(r.messages, r.agent, discussion.sample_seed(self.seeds[k // n], 0, 0, r.agent, t)))
        completions = self.generator.generate(rows)
        self.turn += 1
        self.on_turn(t, completions)
        return completions

    def __getattr__(self, name: str):
        return getattr(self.generator, name)


class DiscussionBatcher:
    """Runs queued requests in batches on its own thread (see the module docstring).

    `admit(question)` runs on the worker before a request joins a batch and raises (an APIError) to refuse it alone;
    `usage(transcript)` gives a finished request's token counts. Both run on the worker thread because they may use
    the team's tokenizers, which the generator uses there too (a fast tokenizer is not safe across threads)."""

    def __init__(
        self,
        generator: Generator,
        task: Task,
        cfg: DiscussionConfig,
        *,
        max_batch: int = 32,
        wait_ms: float = 10.0,
        max_queue: int = 256,
        admit: Callable[[str], None] | None = None,
        usage: Callable[[Transcript], dict] | None = None,
    ):
        if max_batch < 1 or wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1 and wait_ms >= 0")
        self.generator, self.task, self.cfg = generator, task, cfg
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.admit, self.usage = admit or (lambda question: None), usage or (lambda transcript: {})
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.batch_sizes: list[int] = []  # requests per discussion.run call, for /health and the tests
        self._closed = False
        self._last_end = 0.0  # when the previous batch ended (time.monotonic)
        self.thread = threading.Thread(target=self._loop, name="maporl-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, question: str, seed: int, emit: Callable[[Event], None]) -> Job:
        """Queue a request; raises queue.Full when `max_queue` requests are already waiting."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        job = Job(question, seed, emit)
        self.queue.put_nowait(job)
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Finish the batch running, then stop the worker (requests still queued get an error)."""
        self._closed = True
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass  # the worker sees _closed after its batch
        self.thread.join(timeout)
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(("error", RuntimeError("the server shut down before this request ran")))

    def _loop(self) -> None:
        while not self._closed:
            first = self.queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                left = max(first.arrived, self._last_end) + self.wait_s - time.monotonic()
                try:
                    job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._closed = True
                    break
                batch.append(job)
            try:
                self._run(batch)
            except Exception as e:  # a fault of this code, not of one request: every request of the batch hears it
                log.exception("a discussion batch failed")
                for job in batch:
                    job.emit(("error", e))
            self._last_end = time.monotonic()

    def _run(self, batch: list[Job]) -> None:
        accepted = []
        for job in batch:
            try:
                self.admit(job.question)
            except Exception as e:
                job.emit(("error", e))
                continue
            accepted.append(job)
            job.emit(("started",))
        if not accepted:
            return
        n = self.cfg.num_agents

        def on_turn(t: int, completions: list[Completion]) -> None:
            for b, job in enumerate(accepted):
                # The rule discussion.run parses by: an answer cut off at max_new_tokens has no final answer.
                answers = [completions[b * n + i] for i in range(n)]
                parsed = [None if c.truncated else self.task.extract_answer(c.text) for c in answers]
                job.emit(
                    (
                        "turn",
                        t,
                        [
                            answer_json(i, c.text, p, c.truncated)
                            for i, (c, p) in enumerate(zip(answers, parsed, strict=True))
                        ],
                    )
                )

        problems = [Problem(problem_id(j.question), j.question, "", self.task.name) for j in accepted]
        generator = SeededTurns(self.generator, [j.seed for j in accepted], n, on_turn)
        try:
            transcripts = discussion.run(problems, self.task, generator, self.cfg, seed=0)
        except Exception as e:  # e.g. a prompt the engine refuses: this batch fails, the server keeps serving
            log.exception("discussion of %d requests failed", len(accepted))
            for job in accepted:
                job.emit(("error", e))
            return
        finally:
            self.batch_sizes.append(len(accepted))
        for job, transcript in zip(accepted, transcripts, strict=True):
            job.emit(("done", transcript, self.usage(transcript)))
