"""The one trainer shared by search, retrain and evaluate."""

from nasctl.train.trainer import Interrupted, Loop, Trainer, pick_device, recording, seed_everything

__all__ = ["Interrupted", "Loop", "Trainer", "pick_device", "recording", "seed_everything"]
