"""The training engine: samples from the store (dataset, transforms), batches and their loading
(batch, loader), methods and their losses' wiring (methods), the loop with AMP, DDP and exact
resume (loop, checkpoint)."""
