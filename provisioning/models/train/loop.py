"""The training loop: repeatable epochs, validation recall, checkpoints, Ctrl-C at a step's end."""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from device.errors import TrainInterrupted, TrainInvalid
from provisioning.models.evaluate import RECALL_AT, ranks
from provisioning.models.train.config import TrainOptions
from provisioning.models.train.data import Split
from provisioning.models.train.towers import MAX_LOGIT_SCALE, DualHeads, ImageTower, TextTower, contrastive_loss
from provisioning.progress import Progress

#: Per-epoch checkpoint files kept besides ``last.pt``.
KEEP_EPOCH_CHECKPOINTS = 3
CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"


def run_config(options: TrainOptions, train_set: Split, val_set: Split | None) -> dict:
    """What a checkpoint must agree on to be resumed (everything but the epoch count)."""
    return {"train_data": train_set.fingerprint, "val_data": val_set.fingerprint if val_set else None,
            "text_tower": f"{TextTower.__name__}:{options.unfreeze_text}",
            "image_tower": f"{ImageTower.__name__}:{options.unfreeze_image}",
            **{name: getattr(options, name) for name in
               ("dim", "hidden", "batch_size", "learning_rate", "tower_learning_rate", "weight_decay", "seed")}}


def _validate(heads: DualHeads, text: TextTower, image: ImageTower, data: Split | None) -> dict:
    """Text-to-image Recall@K and median rank on ``data`` through the current heads (Karpathy protocol)."""
    if data is None:
        return {**{f"R@{k}": None for k in RECALL_AT}, "median_rank": None}
    with torch.no_grad():
        image_vectors = torch.cat([heads.image_head(image.trained(data.image_features[s:s + 256]))
                                   for s in range(0, data.images, 256)]).numpy()
        text_vectors = torch.cat([heads.text_head(text.trained(data.caption_features[s:s + 256]))
                                  for s in range(0, len(data.caption_features), 256)]).numpy()
    rank = ranks(text_vectors, image_vectors, data.caption_targets)
    return {**{f"R@{k}": round(float(np.mean(rank <= k)), 4) for k in RECALL_AT},
            "median_rank": float(np.median(rank))}


def history_row(epoch: int, loss: float | None, heads: DualHeads, text: TextTower, image: ImageTower,
                 val_set: Split | None) -> dict:
    """One row of the training history: the epoch's mean loss, validation recall, temperature."""
    return {"epoch": epoch, "loss": loss, **_validate(heads, text, image, val_set),
            "temperature": round(math.exp(-heads.logit_scale.item()), 6)}


def _epoch_plan(seed: int, epoch: int, data: Split, batch_size: int) -> list[list[tuple[int, int]]]:
    """The batches of one epoch: (photo, caption) pairs, every photo once, order and captions from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(data.images)
    pairs = [(int(i), data.captions_of[i][int(rng.integers(len(data.captions_of[i])))]) for i in order]
    batches = [pairs[s:s + batch_size] for s in range(0, len(pairs), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # a lone pair has no negative: fold it in
        batches[-2].extend(batches.pop())
    return batches


class _StopRequest:
    """Ctrl-C while training: the step in progress finishes, then training stops at a checkpoint.

    A second Ctrl-C stops at once (the last checkpoint stays).
    """

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)


def _save_checkpoint(directory: Path, state: dict, epoch_done: bool) -> Path:
    """Write ``last.pt`` (and ``epoch-NNN.pt`` at an epoch's end) atomically; keep the last few epochs."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{LAST_CHECKPOINT}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    last = directory / LAST_CHECKPOINT
    if epoch_done:
        epoch_file = directory / f"epoch-{state['epoch']:03d}.pt"
        shutil.copyfile(tmp, epoch_file)
        for old in sorted(directory.glob("epoch-*.pt"))[:-KEEP_EPOCH_CHECKPOINTS]:
            old.unlink()
    os.replace(tmp, last)
    return last


def load_checkpoint(directory: Path, config: dict) -> dict:
    path = directory / LAST_CHECKPOINT
    if not path.is_file():
        raise TrainInvalid(f"{directory}: no checkpoint to resume from ({LAST_CHECKPOINT})")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise TrainInvalid(f"{path}: unreadable checkpoint: {exc}") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainInvalid(f"{path}: not a checkpoint of this Glimpse version")
    data_names = {"train_data": "the training photos or captions", "val_data": "the validation photos or captions"}
    differ = [data_names.get(k) or f"{k} ({state['config'].get(k)!r} then, {v!r} now)"
              for k, v in config.items() if state["config"].get(k) != v]
    if differ:
        raise TrainInvalid(f"{path} was made with other data or options: {', '.join(differ)}; "
                           "use the same ones, or start over with --force")
    return state


def make_optimizer(heads: DualHeads, options: TrainOptions) -> torch.optim.Optimizer:
    groups = [
        {"params": [*heads.text_head.parameters(), *heads.image_head.parameters()],
         "lr": options.learning_rate, "weight_decay": options.weight_decay},
        {"params": [heads.logit_scale], "lr": options.learning_rate, "weight_decay": 0.0},
    ]
    tower_params = [*heads.text_blocks.parameters(), *heads.image_blocks.parameters()]
    if tower_params:
        groups.append({"params": tower_params, "lr": options.tower_learning_rate,
                       "weight_decay": options.weight_decay})
    return torch.optim.AdamW(groups)


def fit(options: TrainOptions, text: TextTower, image: ImageTower, heads: DualHeads, optimizer,
         train_set: Split, val_set: Split | None, checkpoints: Path, start: tuple, on_step) -> None:
    """The training loop, from ``start`` = (run config, completed epochs, step within the next
    epoch, its running loss, history so far) to ``options.epochs``; appends to the history.

    Raises:
        TrainInterrupted: Ctrl-C, after the step in progress and a checkpoint.
    """
    config, epoch, step, loss_sum, history = start

    def state_now(epoch_count, step_in_epoch, running):
        return {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch_count, "step": step_in_epoch,
                "loss_sum": running, "history": history, "heads": heads.state_dict(),
                "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}

    batch_size = min(options.batch_size, train_set.images)
    steps_per_epoch = len(_epoch_plan(options.seed, 1, train_set, batch_size))
    total = steps_per_epoch * options.epochs
    progress = Progress(total, options.progress, already=min(epoch * steps_per_epoch + step, total),
                        label="training", already_from="the checkpoint")
    with _StopRequest() as stop:
        while epoch < options.epochs:
            current = epoch + 1
            plans = _epoch_plan(options.seed, current, train_set, batch_size)
            while step < len(plans):
                batch = plans[step]
                photos = [train_set.image_features[i] for i, _ in batch]
                captions = [train_set.caption_features[c] for _, c in batch]
                loss = contrastive_loss(heads.text_head(text.trained(captions)),
                                        heads.image_head(image.trained(photos)), heads.logit_scale)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    heads.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                loss_sum += loss.item()
                step += 1
                progress.update(epoch * steps_per_epoch + step,
                                note=f"epoch {current}/{options.epochs}, step {step}/{len(plans)}, "
                                     f"loss {loss_sum / step:.4f}")
                if on_step:
                    on_step(current, step - 1)
                if stop.requested and step < len(plans):
                    path = _save_checkpoint(checkpoints, state_now(epoch, step, loss_sum), epoch_done=False)
                    progress.update(epoch * steps_per_epoch + step, final=True)
                    raise TrainInterrupted(f"interrupted at epoch {current}, step {step}; checkpoint {path}: "
                                           "run the same command with --resume to continue")
            history.append(history_row(current, round(loss_sum / len(plans), 6), heads, text, image, val_set))
            epoch, step, loss_sum = current, 0, 0.0
            path = _save_checkpoint(checkpoints, state_now(epoch, 0, 0.0), epoch_done=True)
            if stop.requested and epoch < options.epochs:
                progress.update(epoch * steps_per_epoch, final=True)
                raise TrainInterrupted(f"interrupted after epoch {epoch}; checkpoint {path}: "
                                       "run the same command with --resume to continue")
    progress.update(total, final=True)
