import json

from rl.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from rl.tracking import read_metrics, truncate_metrics


def test_truncate_metrics_drops_later_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "x": s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 5, "x"')
    truncate_metrics(path, 3)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    def write_policy(folder):
        import os

        os.makedirs(folder)
        (tmp_path / "marker").write_text(folder)

    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, write_policy, {"sampler": {}}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    # a half-written checkpoint (killed before the rename) is ignored
    (tmp_path / "checkpoints" / ".tmp-step_000008" / "policy").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_000010").mkdir()  # no state.json: incomplete
    step, path = latest_checkpoint(tmp_path)
    assert step == 6 and json.loads((path / "state.json").read_text())["step"] == 6
