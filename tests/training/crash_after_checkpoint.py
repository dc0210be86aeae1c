"""Run by torchrun in tests/training/test_processes.py (not a test module): train CONFIG until the first
checkpoint is on disk, then die at once, as a kill would. Only the first process writes checkpoints;
when it dies, torchrun stops the others."""

import os
import sys

import tunewise
from tunewise.training import loop

real_save = loop.save_checkpoint


def save_then_die(*args, **kwargs):
    real_save(*args, **kwargs)
    os._exit(9)


loop.save_checkpoint = save_then_die
tunewise.train(sys.argv[1], show_progress=False)
