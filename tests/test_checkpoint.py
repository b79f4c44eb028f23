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


def _policy_files(folder):
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    model = Path(folder) / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    save_file({"w": torch.ones(4, 4)}, str(model / "model.safetensors"))
    (Path(folder) / "trainer_state.pt").write_bytes(b"x")


def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_is_used(tmp_path, caplog):
    from rl.checkpoint import usable_checkpoint

    for step in (2, 4):
        save_checkpoint(tmp_path, step, _policy_files, {"sampler": {}}, keep=3)
    (tmp_path / "checkpoints" / "step_000004" / "state.json").write_text('{"step": 4, "sampler": {')  # torn
    with caplog.at_level("WARNING"):
        step, path, state = usable_checkpoint(tmp_path)
    assert step == 2 and state["step"] == 2
    assert "step_000004/state.json is damaged" in caplog.text
    (tmp_path / "checkpoints" / "step_000002" / "policy" / "trainer_state.pt").unlink()  # a missing file too
    assert usable_checkpoint(tmp_path) is None


def test_a_truncated_model_file_is_named_and_its_checkpoint_skipped(tmp_path, caplog):
    """Issue 20, item 7: a truncated model.safetensors used to surface after 39 s as
    vLLM's 226-line start-up error."""
    import pytest

    from rl.checkpoint import usable_checkpoint
    from rl.models import CorruptModel, check_model_dir

    for step in (2, 4):
        save_checkpoint(tmp_path, step, _policy_files, {"sampler": {}}, keep=3)
    weights = tmp_path / "checkpoints" / "step_000004" / "policy" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with caplog.at_level("WARNING"):
        step, _, _ = usable_checkpoint(tmp_path)
    assert step == 2 and f"{weights} is truncated" in caplog.text
    with pytest.raises(CorruptModel, match=f"model.path: {weights} is truncated"):
        check_model_dir(weights.parent)
    weights.write_bytes(b"\x05")
    with pytest.raises(CorruptModel, match="is truncated or not a safetensors file"):
        check_model_dir(weights.parent)
    (weights.parent / "config.json").write_text("{")
    with pytest.raises(CorruptModel, match="config.json is not valid JSON"):
        check_model_dir(weights.parent)
    assert check_model_dir(tmp_path / "checkpoints" / "step_000002").name == "model"  # the intact one


def test_a_full_disk_is_named_and_leaves_no_partial_checkpoint(tmp_path):
    import errno

    import pytest

    def fills_the_disk(folder):
        _policy_files(folder)
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from OSError(
            errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"the disk is full .*rl train --resume"):
        save_checkpoint(tmp_path, 3, fills_the_disk, {}, keep=2)
    assert not list((tmp_path / "checkpoints").iterdir())  # no .tmp-step_000003 left behind


def test_a_misspelt_alias_suggests_its_key():
    import pytest

    from rl.config import load_config

    with pytest.raises(ValueError, match=r"'grpo.learnig_rate' \(did you mean 'grpo.lr'\?\)"):
        load_config(None, ["grpo.learnig_rate=1e-5"])


def test_the_best_checkpoint_survives_rotation(tmp_path):
    save_checkpoint(tmp_path, 1, _policy_files, {}, keep=1, name="best")
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, _policy_files, {}, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    assert json.loads((tmp_path / "checkpoints" / "best" / "state.json").read_text())["step"] == 1


def test_a_resumed_run_may_change_only_its_length(tmp_path):
    """`rl train --resume RUN run.steps=N` extends a run; any other key is refused by name
    before anything starts, and the run's config.yaml is left as it was."""
    import pytest

    from rl.config import load_config, save_config
    from rl.train import train

    save_config(load_config(None), tmp_path / "config.yaml")
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"--resume: grpo.lr cannot change in a resumed run \(only run.steps"):
        train(resume_dir=tmp_path, overrides=["run.steps=300", "grpo.lr=1e-3"])
    with pytest.raises(ValueError, match=r"--resume takes no config file \('configs/grpo_math_tiny.yaml'\)"):
        train(resume_dir=tmp_path, overrides=["configs/grpo_math_tiny.yaml"])
    with pytest.raises(ValueError, match=r"'run.step' \(did you mean 'run.steps'\?\)"):
        train(resume_dir=tmp_path, overrides=["run.step=300"])
    save_checkpoint(tmp_path, 40, _policy_files, {"sampler": {}}, keep=2)
    with pytest.raises(ValueError, match=r"run.steps=30 is below the run's latest checkpoint, step 40"):
        train(resume_dir=tmp_path, overrides=["run.steps=30"])
    assert (tmp_path / "config.yaml").read_text() == before
