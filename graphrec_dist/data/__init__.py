"""Data layer: raw sources, the Graph3 builder, leave-one-out splits and the cached bundle.

Nothing in this package touches torch.distributed.
"""
