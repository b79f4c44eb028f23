"""Which tasks go into each batch: fixed per-environment quotas (this module's
``MixedSampler``)."""
