"""The RLHF stage: GenRM pairwise judging and group-relative length control.

``genrm``: the circular comparison, tie rule, base rewards and length control,
as pure functions (docs/recipe.md sections 4-5). ``judge``: the judge's prompt
and the worker that samples and parses its judgements. ``group_reward``: the
reward stage that applies them to rollout groups. ``synthetic``: a preference
task whose truth is known in code, for testing the stage end to end."""
