"""The trainer and the stage lifecycle that search and retrain share (evaluate borrows only the device helpers)."""

from nasctl.train.trainer import Interrupted, Loop, Trainer, pick_device, recording, seed_everything

__all__ = ["Interrupted", "Loop", "Trainer", "pick_device", "recording", "seed_everything"]
