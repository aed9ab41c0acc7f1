"""Training EnvNet the papers' way, in one loop that the CLI, the app and the tests all drive.

Recipe (EnvNet / BC learning): one random 1.5 s crop per clip per epoch, Nesterov SGD (momentum 0.9,
weight decay 5e-4), batch 64, lr 0.01 divided by 10 at 50 % and 75 % of the epochs; optionally
between-class mixing with a KL-divergence loss. The loop reports what happens as events (dicts with a
"kind") to callbacks; it can be stopped between batches and resumed from its last saved state.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from envnet import checkpoint, cpu, verdict
from envnet.data import Dataset, bc_batch, random_crop, random_gain, random_scale
from envnet.evaluate import evaluate
from envnet.model import EnvNet, build_model
from envnet.spectra import frequency_response

CALIBRATION_CLIPS = 200  # clips classified to set the verdict's threshold after training (a few seconds)
Event = dict
Callback = Callable[[Event], None]


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: tuple[float, ...] = (0.5, 0.75)  # fractions of the run where lr is divided by 10
    warmup_epochs: int = 0  # linear lr warm-up, useful for BC learning's harder targets
    bc: bool = False
    augment: bool = False  # EnvNet-v2's random time-stretch (×0.8–1.25) and gain (±6 dB) before each crop
    fc_width: int = 1024
    dropout: float = 0.5
    seed: int = 0
    eval_every: int = 5  # epochs between validation passes (10 crops per clip is not free)
    filters_every: int = 1  # epochs between frequency-response snapshots; 0 = never
    save_every: int = 1  # epochs between resumable state saves (when an output path is set)
    # bfloat16 autocast: True, False, or "auto" = only where it is fast here: a GPU with bf16, or a CPU with
    # native bf16 (AVX-512 BF16 / AMX) where envnet.cpu's probe measures it faster. On other CPUs bf16 is
    # emulated and 4-6× slower than fp32 (benchmarks/README.md).
    bf16: bool | str = "auto"
    device: str = "cpu"
    init_features: str | None = None  # checkpoint whose feature block starts the run (fine-tuning)
    init_weights: str | None = None  # checkpoint (same classes and width) whose every layer starts the run

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        drops = sum(epoch >= math.ceil(f * self.epochs) for f in self.schedule)
        return self.lr * 0.1**drops


def clamp_batch(batch_size: int, n_clips: int) -> int:
    """The batch actually used: never more than the clips there are (a batch of 32 over 13 clips would make
    every epoch one update on a batch the settings never asked for)."""
    return max(1, min(batch_size, n_clips))


def suggested_batch(n_clips: int, preferred: int = 32) -> int:
    """A sensible default for a small dataset: about four updates per epoch, at least 4 clips per batch
    (BatchNorm needs a few), never more than the clips."""
    return clamp_batch(min(preferred, max(4, n_clips // 4)), n_clips)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class Trainer:
    train_ds: Dataset
    val_ds: Dataset | None
    config: TrainConfig = field(default_factory=TrainConfig)
    out: str | Path | None = None  # checkpoint stem: OUT.safetensors/.json, and OUT.state.* to resume
    callbacks: list[Callback] = field(default_factory=list)
    card_extra: dict = field(default_factory=dict)

    def __post_init__(self):
        c = self.config
        self.device = resolve_device(c.device)
        self.bf16 = cpu.resolve_bf16(c.bf16, self.device)  # what "auto" means on this machine
        # The seed fixes the initial weights too; fork_rng keeps the caller's global random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.model: EnvNet = build_model(n_classes=len(self.train_ds.classes), fc_width=c.fc_width,
                                             dropout=c.dropout)
        if c.init_features:
            self._load_features(c.init_features)
        if c.init_weights:
            self._load_weights(c.init_weights)
        self.model.to(self.device)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay
        )
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.best: dict | None = None
        self._stop = threading.Event()
        self._start_time = time.perf_counter()  # reset by run(); event times count from there
        self._val_scores: tuple[int, torch.Tensor] | None = None  # (epoch, scores) of the last validation pass
        self.rank, self.world = _dist()

    # -- public -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end after the current batch; the last state is saved."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def emit(self, kind: str, **data) -> None:
        if self.rank != 0:
            return
        event = {"kind": kind, **data}
        for cb in self.callbacks:
            cb(event)

    def run(self) -> EnvNet:
        """Train from the current epoch to `config.epochs` (or until stopped); returns the model in eval mode."""
        c = self.config
        model = self.model
        if self.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
        waves = [w for w in self.train_ds.waves if w.numel()]
        labels = torch.tensor([cl.label for cl, w in zip(self.train_ds.clips, self.train_ds.waves, strict=False) if w.numel()])
        if not waves:
            raise ValueError("no usable training clips (all failed to decode or are empty)")
        if len(waves) < self.world:  # some process would get no batch and the others would wait for it forever
            raise ValueError(f"{len(waves)} training clips cannot be shared among {self.world} processes")
        self._start_time = time.perf_counter()
        self.emit("start", epochs=c.epochs, n_train=len(waves), n_val=len(self.val_ds) if self.val_ds else 0,
                  config=asdict(c), classes=self.train_ds.classes, start_epoch=self.epoch,
                  precision="bf16" if self.bf16 else "fp32")
        if self.epoch == 0 and c.filters_every:
            self._emit_filters()
        while self.epoch < c.epochs and not self.stopped:
            row = self.train_epoch(model, waves, labels)
            if row is None:
                break  # stopped mid-epoch: a half epoch is not saved, and resume repeats it from its start
            self.finish_epoch(row)
        if self.world > 1:
            for buf in self.model.buffers():  # BatchNorm statistics are per process: take rank 0's
                dist.broadcast(buf, 0)
        if self.rank == 0:  # a stopped run's model is still used: it gets its verdict rule too
            self.model.calibration = self.calibrate()
        if self.out and self.rank == 0:
            path = self.save_checkpoint(self.out)
            self.emit("checkpoint", path=str(path), epoch=self.epoch)
        self.emit("end", epoch=self.epoch, stopped=self.stopped, history=self.history, seconds=self._elapsed())
        self.model.eval()
        return self.model

    def train_epoch(self, model: torch.nn.Module, waves: list[torch.Tensor], labels: torch.Tensor) -> dict | None:
        """One pass over this process's share of the clips: the epoch's row, or None when stopped within it."""
        c = self.config
        epoch = self.epoch
        t0 = time.perf_counter()
        # Seeding per epoch makes a resumed run draw the same crops and dropout masks as an unbroken one.
        torch.manual_seed(c.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        lr = c.lr_at(epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        order = torch.randperm(len(waves), generator=gen)
        n_use = len(order) // self.world * self.world or len(order)
        order = order[:n_use][self.rank :: self.world]
        per_rank_batch = max(1, clamp_batch(c.batch_size, len(waves)) // self.world)
        model.train()
        total_loss, total_correct, seen = 0.0, 0.0, 0
        n_batches = math.ceil(len(order) / per_rank_batch)
        self.emit("epoch_start", epoch=epoch + 1, n_batches=n_batches)  # the page knows the batch count at once
        for b in range(n_batches):
            if self._should_stop():
                break
            idx = order[b * per_rank_batch : (b + 1) * per_rank_batch]
            loss, correct = self.train_batch(model, [waves[i] for i in idx.tolist()], labels[idx], gen)
            total_loss += loss * len(idx)
            total_correct += correct
            seen += len(idx)
            self.emit("batch", epoch=epoch + 1, batch=b + 1, n_batches=n_batches, loss=loss, lr=lr,
                      elapsed=self._elapsed())
        if self.stopped and seen < len(order):
            return None
        self.epoch += 1
        return {"epoch": self.epoch, "lr": lr, "train_loss": total_loss / max(1, seen),
                "train_acc": total_correct / max(1, seen), "seconds": time.perf_counter() - t0}

    def train_batch(self, model: torch.nn.Module, waves: list[torch.Tensor], y: torch.Tensor,
                    gen: torch.Generator) -> tuple[float, float]:
        """One optimizer step on random crops of these clips: (mean loss, number right)."""
        c = self.config
        n_classes = len(self.train_ds.classes)
        x = torch.stack([random_crop(self._augment(w, gen), gen) for w in waves])
        if c.bc:
            x, target = bc_batch(x, y, n_classes, gen)
        else:
            target = F.one_hot(y, n_classes).float()
        x, target = x.to(self.device), target.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = model(x)
        logp = F.log_softmax(logits.float(), dim=-1)
        # Cross-entropy with soft targets; for BC mixes it differs from KL only by a constant.
        loss = -(target * logp).sum(-1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item(), float((logp.argmax(-1) == target.argmax(-1)).sum())

    def finish_epoch(self, row: dict) -> None:
        """After an epoch: validate when due, record and report it, snapshot the filters, save."""
        c = self.config
        last = self.epoch == c.epochs
        if self.val_ds is not None and len(self.val_ds) and (self.epoch % c.eval_every == 0 or last) and self.rank == 0:
            ev = evaluate(self.model, self.val_ds)
            self._val_scores = (self.epoch, ev["scores"])  # the final pass's also serve the verdict's calibration
            row.update(val_acc=ev["accuracy"], val_loss=ev["loss"])
            if self.best is None or ev["accuracy"] >= self.best["val_acc"]:
                self.best = {"epoch": self.epoch, "val_acc": ev["accuracy"]}
        self.history.append(row)
        self.emit("epoch", **row, epochs=c.epochs, elapsed=self._elapsed())
        if c.filters_every and (self.epoch % c.filters_every == 0 or last):
            self._emit_filters()
        if self.out and (self.epoch % c.save_every == 0 or last):
            self.save_state()
            if self.rank == 0:  # a usable model survives even if the process is killed later
                self.save_checkpoint(self.out)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start_time

    def _augment(self, wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return random_gain(random_scale(wave, gen), gen) if self.config.augment else wave

    # -- checkpoints ------------------------------------------------------------------------------

    def card(self, name: str) -> dict:
        last = self.history[-1] if self.history else {}
        metrics = {k: last[k] for k in ("train_loss", "train_acc", "val_acc", "val_loss") if k in last}
        return checkpoint.make_card(
            self.model, self.train_ds.classes, name,
            targets=self.train_ds.targets,
            recipe={**asdict(self.config), "epochs_completed": self.epoch, "precision": "bf16" if self.bf16 else "fp32"},
            data={"source": self.train_ds.source, "train_folds": self.train_ds.folds, "n_train": len(self.train_ds),
                  "val_folds": self.val_ds.folds if self.val_ds else [], "n_val": len(self.val_ds) if self.val_ds else 0},
            metrics=metrics,
            history=self.history,
            **({"verdict": self.model.calibration.to_card()} if self.model.calibration else {}),
            **self.card_extra,
        )

    def calibrate(self) -> verdict.Calibration:
        """The verdict's threshold for the trained model: from its held-out clips when there are some
        (at most CALIBRATION_CLIPS), otherwise from its training clips, which it is surer of (said so)."""
        ds, known_from = (self.val_ds, "held-out clips") if self.val_ds is not None and len(self.val_ds) else (
            self.train_ds, "training clips (no held-out clips: the threshold is set too high, so more unsure)")
        waves = [w for w in ds.waves if w.numel()]
        if len(waves) > CALIBRATION_CLIPS:
            gen = torch.Generator().manual_seed(self.config.seed)
            waves = [waves[i] for i in torch.randperm(len(waves), generator=gen)[:CALIBRATION_CLIPS].tolist()]
        elif ds is self.val_ds and self._val_scores is not None and self._val_scores[0] == self.epoch:
            waves = self._val_scores[1]  # the same clips, just classified by the same weights: not again
        return verdict.calibrate(self.model, self.train_ds.classes, waves, known_from=known_from)

    def save_checkpoint(self, stem: str | Path) -> Path:
        return checkpoint.save(stem, self.model, self.card(Path(stem).name))

    def save_state(self) -> None:
        """Full-precision weights and momentum, so a resumed run continues exactly (checkpoint.py)."""
        if self.rank != 0:
            return
        info = {"epoch": self.epoch, "history": self.history, "best": self.best, "config": asdict(self.config),
                "classes": self.train_ds.classes}
        checkpoint.save_training_state(self.out, self.model, self.opt, info)

    def resume(self) -> bool:
        """Continue from OUT.state.*, if present. Returns whether there was a state to resume."""
        def same_classes(info: dict) -> None:
            if info["classes"] != self.train_ds.classes:
                raise checkpoint.CheckpointError("the saved state was trained on other classes; it cannot be resumed here")

        info = checkpoint.load_training_state(self.out, self.model, self.opt, check=same_classes)
        if info is None:
            return False
        self.epoch, self.history, self.best = info["epoch"], info["history"], info.get("best")
        return True

    def _should_stop(self) -> bool:
        """Whether to stop now; with several processes, all stop together if any was asked to, else the
        others would wait forever for its gradients."""
        if self.world > 1:
            flag = torch.tensor([float(self.stopped)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item():
                self._stop.set()
        return self.stopped

    def _load_weights(self, stem: str) -> None:
        """Continue from a whole checkpoint with a fresh schedule (a warm restart), e.g. to train longer."""
        ck = checkpoint.load(stem)
        if ck.classes != self.train_ds.classes:
            raise checkpoint.CheckpointError(f"{stem} was trained on {ck.classes}, not on {self.train_ds.classes}")
        if ck.model.config.fc_width != self.config.fc_width:
            raise checkpoint.CheckpointError(
                f"{stem} has classifier width {ck.model.config.fc_width}, not {self.config.fc_width}")
        state = ck.model.state_dict()
        n = len(self.train_ds.classes)
        # A "none of these" output is fine-tuned after training (envnet.verdict), not trained here: dropped.
        state["fc7.weight"], state["fc7.bias"] = state["fc7.weight"][:n], state["fc7.bias"][:n]
        self.model.load_state_dict(state)

    def _load_features(self, stem: str) -> None:
        src = checkpoint.load(stem).model.state_dict()
        own = self.model.state_dict()
        own.update({k: v for k, v in src.items() if k.startswith(("conv1.", "conv2."))})
        self.model.load_state_dict(own)

    def _emit_filters(self) -> None:
        if self.rank != 0 or not self.callbacks:
            return
        self.emit("filters", epoch=self.epoch, response=frequency_response(self.model))
