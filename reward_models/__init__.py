"""GenRM pairwise judging and group-relative length control (RLHF stage).

Nothing is implemented here yet; see docs/status.md."""
