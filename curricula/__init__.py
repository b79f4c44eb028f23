"""Which tasks go into each batch. ``base.Sampler`` is the protocol;
``mixed.MixedSampler`` draws fixed per-environment quotas, and
``gaussian.GaussianCurriculum`` draws tasks by profiled pass rate around a
moving target (docs/recipe.md section 3); ``profile`` measures pass rates."""
