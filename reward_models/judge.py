"""The GenRM judge: its pairwise prompt, and the worker that runs it.

``judge_messages`` builds the prompt the judge sees (docs/recipe.md section 4):
the conversation and two final answers. ``Judge`` is what runs in the judge
actor: its own engine (vLLM or transformers) and model; it samples a
judgement per comparison, parses it strictly, asks again for the ones that
do not parse (``retries``) and reports what failed. The circular pairing,
tie rule, base rewards and length control stay pure (``genrm``);
``group_reward.GenRMReward`` applies them to rollout groups.
"""

from __future__ import annotations

from reward_models.genrm import Judgement, parse_judgement

INSTRUCTION = ("Rate each answer's helpfulness 1-5 and rank them 1-6 (1-3: answer 1 is better, "
               "4-6: answer 2 is better). Reply with JSON only: "
               '{"score_1": h1, "score_2": h2, "ranking": r}')


def render_conversation(messages: list[dict[str, str]]) -> str:
    """The conversation as the judge reads it (the system prompt left out)."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in turns)


def judge_messages(conversation: list[dict[str, str]], answer_1: str, answer_2: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Conversation:\n{render_conversation(conversation)}\n"
                                        f"Answer 1:\n{answer_1}\nAnswer 2:\n{answer_2}\n{INSTRUCTION}"}]


class Judge:
    """``judge(prompts)`` -> (a Judgement or None per prompt, counters)."""

    def __init__(self, spec):
        """``spec``: an ``rl.rollout.EngineSpec`` whose config is the ``rlhf.judge`` section
        (``rl.config.JudgeConfig``: the engine, plus tokens, temperature and retries)."""
        from transformers import AutoTokenizer

        from rl.rollout import make_engine

        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        self.engine = make_engine(spec)
        cfg = spec.config
        self.max_new_tokens, self.temperature, self.retries = cfg.max_new_tokens, cfg.temperature, cfg.retries

    def judge(self, prompts: list[list[dict[str, str]]]) -> tuple[list[Judgement | None], dict[str, float]]:
        from rl.rollout import SamplingSettings, prompt_token_ids

        results: list[Judgement | None] = [None] * len(prompts)
        ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        pending, calls = list(range(len(prompts))), 0
        settings = SamplingSettings(n=1, max_new_tokens=self.max_new_tokens, temperature=self.temperature)
        for _ in range(1 + self.retries):
            if not pending:
                break
            outputs = self.engine.generate([ids[i] for i in pending], settings)
            calls += len(pending)
            for i, group in zip(pending, outputs):
                results[i] = parse_judgement(self.tokenizer.decode(group[0].token_ids, skip_special_tokens=True))
            pending = [i for i in pending if results[i] is None]
        return results, {"judge/calls": float(calls), "judge/retries": float(calls - len(prompts)),
                         "judge/failures": float(len(pending))}
