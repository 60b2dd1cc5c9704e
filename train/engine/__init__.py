"""The training engine: samples from the store (data, augment), methods and their losses'
wiring (methods), the loop with AMP, DDP and exact resume (loop, checkpoint)."""
