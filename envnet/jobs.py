"""What the server shares between visitors, with no Streamlit in it: one training at a time per server,
a training run in a background thread whose events a page can poll and find again by token, the
folder of models visitors share, and the cap on live microphone streams (envnet/stream.py).

Many people may share one server (a public Space): the only process-wide state here is the training
slot and the recent runs; everything a user makes lives in their own session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envnet import checkpoint, limits
from envnet.checkpoint import CHECKPOINT_DIR, Checkpoint, checkpoint_stem, safe_name
from envnet.data import Dataset
from envnet.progress import TimeLeft
from envnet.spectra import FrequencyResponse
from envnet.train import TrainConfig, Trainer

# Seconds without a page poll before a run is treated as abandoned and stopped. The environment variable
# lets the browser tests close a tab and see the slot freed without waiting a minute and a half.
HEARTBEAT_TIMEOUT = float(os.environ.get("ENVNET_HEARTBEAT_TIMEOUT", "90"))
TURN_TIMEOUT = 120.0  # seconds the first visitor in the training queue has to start once the slot is free
MAX_BATCH_LOSSES = 2000  # enough points for a smooth curve; bounded so a long run's memory stays flat
KEPT_RUNS = 4  # finished runs the server keeps findable by token; each holds a model in memory
SHARED_QUOTA_BYTES = 1 << 30  # checkpoints/ may grow to this with visitors' shared models (a 4096-wide one is 97 MB)


# ---- the shared folder -------------------------------------------------------------------------------


def share(ckpt: Checkpoint, folder: Path = CHECKPOINT_DIR, quota: int = SHARED_QUOTA_BYTES) -> Path:
    """Save a visitor's model into the shared folder under its own name, labelled as shared by a visitor.
    Refused on a public server, over the folder's quota, for a shipped model's name, and for a name that
    exists (the check and the write are one step: see checkpoint.save(exclusive=True))."""
    if limits.public():
        raise checkpoint.CheckpointError(SHARE_OFF)
    stem = checkpoint_stem(ckpt.name, folder)
    weights = checkpoint.state_bytes(ckpt.model)
    used = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
    if used + len(weights) > quota:
        raise checkpoint.CheckpointError(
            f"the server's space for shared models is full ({used / 1e6:.0f} of {quota / 1e6:.0f} MB used); "
            "download your model instead")
    card = {**ckpt.card, "name": stem.name, "shared_by": "a visitor"}
    checkpoint.save(stem, ckpt.model, card, exclusive=True)
    return stem


SHARE_OFF = ("sharing is off on this public server: a model shared here would be offered to every visitor "
             "without anyone checking it. Download it instead, and upload it in the sidebar where you need it.")


# ---- one training at a time ---------------------------------------------------------------------


class TrainingSlot:
    """A process-wide, non-blocking lock with an owner, and a queue of visitors waiting for it.

    A visitor who finds the slot taken joins the queue and is shown their place in it; when the slot frees,
    only the first in line may take it, within `turn_timeout` seconds (then it is the next one's turn: a
    visitor who walked away from an open tab must not hold up the rest of the class). A place is kept while
    its visitor's page keeps asking for it (`position`), and given up after `queue_timeout` seconds of
    silence (the tab was closed).
    """

    def __init__(self, queue_timeout: float | None = None, turn_timeout: float = TURN_TIMEOUT) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._since = 0.0
        self._queue: list[str] = []  # visitor ids, first in line first
        self._seen: dict[str, float] = {}  # visitor -> monotonic time their page last asked
        self._turn: str | None = None  # the first in line while the slot is free
        self._turn_since = 0.0
        self.queue_timeout = HEARTBEAT_TIMEOUT if queue_timeout is None else queue_timeout
        self.turn_timeout = turn_timeout

    def acquire(self, owner: str, visitor: str | None = None) -> bool:
        """Take the slot for `owner` (a job id): only when free and, if visitors are queued, for the first
        of them (`visitor`), who then leaves the queue."""
        with self._lock:
            self._prune()
            if self._owner is not None or (self._queue and self._queue[0] != visitor):
                return False
            if visitor in self._queue:
                self._queue.remove(visitor)
                self._seen.pop(visitor, None)
            self._owner, self._since, self._turn = owner, time.time(), None
            return True

    def release(self, owner: str) -> None:
        with self._lock:
            if self._owner == owner:
                self._owner = None
                self._prune()  # the first in line's turn starts now

    def join(self, visitor: str) -> int:
        """Queue `visitor` (once); their 1-based place in the line."""
        with self._lock:
            if visitor not in self._queue:
                self._queue.append(visitor)
            self._seen[visitor] = time.monotonic()
            self._prune()
            return self._queue.index(visitor) + 1

    def position(self, visitor: str) -> int | None:
        """The visitor's 1-based place in the line (keeping it), or None when not queued."""
        with self._lock:
            self._prune()
            if visitor not in self._queue:
                return None
            self._seen[visitor] = time.monotonic()
            return self._queue.index(visitor) + 1

    def turn_left(self, visitor: str) -> float | None:
        """Seconds `visitor` has left to start, while it is their turn (slot free, first in line); else None."""
        with self._lock:
            self._prune()
            if self._turn != visitor:
                return None
            return max(0.0, self.turn_timeout - (time.monotonic() - self._turn_since))

    def leave(self, visitor: str) -> None:
        with self._lock:
            if visitor in self._queue:
                self._queue.remove(visitor)
                self._seen.pop(visitor, None)
            self._prune()

    @property
    def waiting(self) -> int:
        with self._lock:
            self._prune()
            return len(self._queue)

    def _prune(self) -> None:
        """Drop places whose page stopped asking, then the first in line whose turn ran out (repeatedly)."""
        now = time.monotonic()
        self._queue = [v for v in self._queue if now - self._seen[v] <= self.queue_timeout]
        self._seen = {v: self._seen[v] for v in self._queue}
        while self._owner is None and self._queue:
            if self._turn != self._queue[0]:
                self._turn, self._turn_since = self._queue[0], now
            elif now - self._turn_since > self.turn_timeout:
                self._seen.pop(self._queue.pop(0))
                continue
            return
        self._turn = None

    @property
    def owner(self) -> str | None:
        return self._owner

    def busy_for(self) -> float:
        return time.time() - self._since if self._owner else 0.0


SLOT = TrainingSlot()


# A closed tab or a reload starts a new Streamlit session, which knows nothing of the old one's run. Runs
# are therefore findable by an unguessable token that the app keeps in the page's address.
_runs: dict[str, TrainingJob] = {}
_runs_lock = threading.Lock()


def _remember(job: TrainingJob) -> None:
    with _runs_lock:
        _runs[job.token] = job
        finished = [t for t, j in _runs.items() if not j.running and j is not job]
        for token in finished[: max(0, len(_runs) - KEPT_RUNS)]:  # oldest first: dicts keep insertion order
            _runs.pop(token).remove_files()


def find_run(token: str) -> TrainingJob | None:
    """The run started with this token, while it runs and for the last KEPT_RUNS finished ones."""
    with _runs_lock:
        return _runs.get(token)


@dataclass
class RunState:
    """Everything a page draws, assembled from the trainer's events under a lock."""

    status: str = "waiting"  # waiting | running | done | stopped | failed
    epochs: int = 0
    epoch: int = 0
    batch: int = 0
    n_batches: int = 0
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    batch_losses: list[tuple[float, float]] = field(default_factory=list)
    snapshots: list[tuple[int, np.ndarray]] = field(default_factory=list)
    freqs: np.ndarray | None = None
    latest: FrequencyResponse | None = None  # the newest snapshot, with its centre-frequency order
    error: str | None = None
    message: str = ""
    clock: float = 0.0  # wall-clock seconds since the start when the snapshot was taken (frozen at the end)
    seconds_left: float | None = None  # the estimate at that moment (TrainingJob.eta); None when not running
    stopping: bool = False  # asked to stop, still running: finishing its step, then its model is saved

    @property
    def fraction(self) -> float:
        if not self.epochs:
            return 0.0
        within = self.batch / self.n_batches if self.n_batches and self.epoch else 0.0
        done = max(0, self.epoch - 1) + within if self.batch else len(self.history)
        return min(1.0, max(done, len(self.history)) / self.epochs)


class TrainingJob:
    """A Trainer run in a daemon thread. Events land in a RunState that `snapshot()` copies for the page.

    The slot is released in `finally`, whatever happens. A page is expected to call `heartbeat()` when it
    polls; if nobody has polled for HEARTBEAT_TIMEOUT seconds (the browser went away) the run stops at the
    next batch and still saves its model, so the server is never stuck busy and nothing trained is lost.
    """

    def __init__(self, train_ds: Dataset, val_ds: Dataset | None, config: TrainConfig, name: str,
                 slot: TrainingSlot = SLOT, out_dir: Path | None = None,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT, max_seconds: float | None = None) -> None:
        # Class names end up in the model card, shown to whoever loads the model: checked before training.
        for c in train_ds.classes:
            if problem := checkpoint.name_problem(c, "class name"):
                raise ValueError(problem)
        if limits.public():
            # One visitor must not hold the only training slot for days (forged widget values included).
            if config.epochs > limits.PUBLIC_MAX_EPOCHS:
                raise ValueError(f"{config.epochs} epochs asked for; this public server trains at most "
                                 f"{limits.PUBLIC_MAX_EPOCHS} per run")
            max_seconds = min(max_seconds or limits.PUBLIC_MAX_TRAIN_SECONDS, limits.PUBLIC_MAX_TRAIN_SECONDS)
        self.max_seconds = max_seconds
        self.id = uuid.uuid4().hex[:12]
        self.token = secrets.token_urlsafe(12)  # finds the run again from another session: see find_run
        self.name = safe_name(name, "my-model")
        self.slot = slot
        self.heartbeat_timeout = heartbeat_timeout
        self._lock = threading.Lock()
        self._state = RunState(epochs=config.epochs)
        self._time_left = TimeLeft(config.epochs)
        self._last_beat = time.time()
        # A run writes its checkpoint to a private temp folder: nothing shared is overwritten, and the
        # model survives even if the browser that started the run is gone. The folder is made when the run
        # starts (not when the slot was busy) and removed when the server forgets the run (see _remember).
        self._own_dir = out_dir is None
        self.out = Path(out_dir or tempfile.gettempdir()) / self.name
        self.trainer = Trainer(train_ds, val_ds, config, out=self.out, callbacks=[self._on_event],
                               card_extra={"trained_in": "EnvNet Sound Lab app"})
        self.result: Checkpoint | None = None
        self.thread: threading.Thread | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, visitor: str | None = None) -> bool:
        """Take the server's training slot and start; False (and nothing started) when it is busy or
        other visitors are queued before `visitor`."""
        if not self.slot.acquire(self.id, visitor):
            return False
        if self._own_dir:
            try:
                self.out = Path(tempfile.mkdtemp(prefix=f"envnet-run-{self.id}-")) / self.name
            except OSError:  # a full disk: the slot must not stay taken by a run that never started
                self.slot.release(self.id)
                raise
            self.trainer.out = self.out
        with self._lock:
            self._state.status = "running"
        self.started_at = self._last_beat = time.time()  # the page that pressed Start is watching
        _remember(self)
        self.thread = threading.Thread(target=self._run, name=f"envnet-train-{self.id}", daemon=True)
        self.thread.start()
        return True

    def _run(self) -> None:
        try:
            model = self.trainer.run()
            card = self.trainer.card(self.name)
            card["metrics"] = {**card.get("metrics", {}), **({"best": self.trainer.best} if self.trainer.best else {})}
            self.result = Checkpoint(model.cpu().eval(), card)
            with self._lock:
                self._state.status = "stopped" if self.trainer.stopped else "done"
        except Exception as e:  # shown to the user; the server keeps running
            with self._lock:
                self._state.status = "failed"
                self._state.error = f"{type(e).__name__}: {e}"
        finally:
            self.ended_at = time.time()
            # A finished run stays findable for a while (find_run): it keeps its model and numbers, not
            # its optimizer's momentum (as large as the model) or its training data.
            self.trainer.opt.state.clear()
            self.trainer.train_ds = self.trainer.val_ds = None
            # The full-precision resume state (twice the model) serves only `envnet train --resume`.
            for p in checkpoint.state_paths(self.out):
                p.unlink(missing_ok=True)
            self.slot.release(self.id)

    def remove_files(self) -> None:
        """Delete the run's private temp folder (its checkpoint), once the server forgets the run."""
        if self._own_dir and self.out.parent.name.startswith("envnet-run-") and not self.running:
            shutil.rmtree(self.out.parent, ignore_errors=True)

    def stop(self) -> None:
        self.trainer.stop()

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds since the start, frozen at the end (events only arrive between batches)."""
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.time()) - self.started_at

    def eta(self) -> float | None:
        """Seconds left at the measured pace of batches and of epoch ends (envnet.progress); None until the
        first batch has been timed and once the run has ended."""
        if not self.running:
            return None
        with self._lock:
            return self._time_left.seconds_left(time.time())

    def heartbeat(self) -> None:
        self._last_beat = time.time()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # -- events -----------------------------------------------------------------------------------

    def _on_event(self, ev: dict) -> None:
        if time.time() - self._last_beat > self.heartbeat_timeout and not self.trainer.stopped:
            self.trainer.stop()
            with self._lock:
                self._state.message = "Stopped: nobody was watching (the page was closed)."
        if self.max_seconds is not None and self.elapsed > self.max_seconds and not self.trainer.stopped:
            self.trainer.stop()
            with self._lock:
                self._state.message = (f"Stopped at this server's limit of {self.max_seconds / 60:g} minutes per "
                                       "training run; the model keeps what it learned.")
        kind = ev["kind"]
        with self._lock:
            s = self._state
            if kind == "start":
                s.epochs = self._time_left.epochs = ev["epochs"]
            elif kind == "epoch_start":
                s.epoch, s.batch, s.n_batches = ev["epoch"], 0, ev["n_batches"]
                self._time_left.epoch_start(ev["epoch"], ev["n_batches"], time.time())
            elif kind == "batch":
                self._time_left.batch_done(ev["epoch"], ev["batch"], ev["n_batches"], time.time())
                s.epoch, s.batch, s.n_batches, s.elapsed = ev["epoch"], ev["batch"], ev["n_batches"], ev["elapsed"]
                s.batch_losses.append((ev["epoch"] - 1 + ev["batch"] / ev["n_batches"], ev["loss"]))
                if len(s.batch_losses) > MAX_BATCH_LOSSES:
                    s.batch_losses = s.batch_losses[::2]
            elif kind == "epoch":
                row = {k: v for k, v in ev.items() if k not in ("kind", "epochs", "elapsed")}
                s.history.append(row)
                s.elapsed = ev["elapsed"]
            elif kind == "filters":
                fr: FrequencyResponse = ev["response"]
                s.freqs = fr.freqs
                s.snapshots.append((int(ev["epoch"]), fr.response))
                s.latest = fr
            elif kind == "end":
                s.elapsed = ev["seconds"]

    def snapshot(self) -> RunState:
        """A copy that the page can draw while the thread keeps appending: one moment of the run, its clock
        and time-left estimate included, so that everything drawn from one snapshot names the same epoch."""
        running = self.running
        with self._lock:
            s = self._state
            left = self._time_left.seconds_left(time.time()) if running else None
            return RunState(s.status, s.epochs, s.epoch, s.batch, s.n_batches, s.elapsed, list(s.history),
                            list(s.batch_losses), list(s.snapshots), s.freqs, s.latest, s.error, s.message,
                            clock=self.elapsed, seconds_left=left, stopping=running and self.trainer.stopped)


# ---- live microphone streams ---------------------------------------------------------------------------


class StreamCap:
    """At most `limit` live streams per server. A holder renews its lease on every update; a lease left
    unrenewed for `stale_after` seconds (a closed tab, a dropped connection) is taken back."""

    def __init__(self, limit: int, stale_after: float = 15.0) -> None:
        self.limit, self.stale_after = max(0, limit), stale_after
        self._leases: dict[str, float] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for owner in [o for o, t in self._leases.items() if now - t > self.stale_after]:
            del self._leases[owner]

    def acquire(self, owner: str) -> bool:
        """Take or renew `owner`'s lease; False when the server is full."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if owner not in self._leases and len(self._leases) >= self.limit:
                return False
            self._leases[owner] = now
            return True

    def release(self, owner: str) -> None:
        with self._lock:
            self._leases.pop(owner, None)

    def holds(self, owner: str) -> bool:
        with self._lock:
            self._expire(time.monotonic())
            return owner in self._leases

    def active(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._leases)

    def full_for(self, owner: str) -> bool:
        """Would `owner` be refused right now?"""
        with self._lock:
            self._expire(time.monotonic())
            return owner not in self._leases and len(self._leases) >= self.limit


# Each stream costs about a tenth of a core (benchmarks/README.md); the rest of the app needs the remainder.
MAX_STREAMS = int(os.environ.get("ENVNET_MAX_STREAMS", "4"))
STREAMS = StreamCap(MAX_STREAMS)
