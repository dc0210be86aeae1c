"""The training loop and what it needs: the step strategies (plain, DP-SGD), batch order, optimiser, checkpoints."""
