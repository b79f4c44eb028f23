"""Rollouts as episodes: reasoning control and the multi-turn tool loop.

Token in, token out. A trajectory is the prompt's token ids followed by
exactly the tokens the engine generated and the tokens the rollout appended
(tool responses, a forced ``</think>``); nothing is decoded and re-encoded
on the way to the trainer. Only generated tokens carry loss (``mask`` 1)
and a logprob; appended ones have mask 0 and logprob 0.

Reasoning control (docs/recipe.md section 2):
- thinking off: the prompt opens the assistant turn with ``<think></think>``
  (the chat template's ``enable_thinking=False``);
- a reasoning budget of N tokens: a turn is generated up to ``</think>`` or N
  tokens; if the reasoning is still open, ``</think>`` is appended and the
  turn goes on for the answer, in the same token budget.

The multi-turn loop (``run_episodes``): generate a turn, hand its decoded
answer to the environment's episode, append the reply messages in the chat
template's form and generate again, until the episode ends (a turn with no
tool call), a turn is cut by the token limit, or the turn / token limits of
the episode are reached.

The engine and the environments come in as callables, so the loop is plain
Python: tests drive it with a scripted engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rl.rollout import Completion, SamplingSettings

Generate = Callable[[list[list[int]], SamplingSettings, list[int]], list[list[Completion]]]


@dataclass
class ReasoningControl:
    thinking: bool = True
    budget: int | None = None
    """Reasoning tokens per turn before ``</think>`` is forced (None: no budget)."""


@dataclass
class Trajectory:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    truncated: bool = False
    """The last turn was cut by a token limit."""
    turns: int = 0
    turn_start: int = 0
    """Index in ``tokens`` where the last model turn starts."""
    forced_think_end: int = 0
    """Turns whose reasoning the budget closed."""

    def add(self, tokens: list[int], logprobs: list[float] | None, generated: bool) -> None:
        self.tokens += tokens
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(tokens)
        self.mask += [1 if generated else 0] * len(tokens)

    def fork(self) -> "Trajectory":
        return Trajectory(self.prompt, list(self.tokens), list(self.logprobs), list(self.mask), self.truncated,
                          self.turns, self.turn_start, self.forced_think_end)

    @property
    def context(self) -> list[int]:
        return self.prompt + self.tokens

    @property
    def last_turn(self) -> list[int]:
        return self.tokens[self.turn_start:]

    def completion(self) -> Completion:
        return Completion(self.tokens, self.logprobs, self.truncated, mask=self.mask, turns=self.turns,
                          forced_think_end=self.forced_think_end)


class TurnGenerator:
    """One model turn for many contexts, with the reasoning budget applied."""

    def __init__(self, generate: Generate, settings: SamplingSettings, eos_id: int, think_end_id: int,
                 control: ReasoningControl):
        self.generate, self.settings = generate, settings
        self.eos_id, self.think_end_id, self.control = eos_id, think_end_id, control

    @classmethod
    def for_tokenizer(cls, generate: Generate, settings: SamplingSettings, tokenizer,
                      control: ReasoningControl) -> "TurnGenerator":
        """End-of-turn and ``</think>`` ids from the model's tokenizer."""
        return cls(generate, settings, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("</think>"), control)

    def _settings(self, n: int, extra_stops: list[int]) -> SamplingSettings:
        s = self.settings
        return SamplingSettings(n=n, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                seed=s.seed, stop_token_ids=list(s.stop_token_ids) + extra_stops)

    def __call__(self, parents: list[Trajectory], n: int, max_tokens: list[int]) -> list[list[Trajectory]]:
        """A turn of ``n`` samples after each parent (n > 1 forks it), each within
        its ``max_tokens`` (reasoning and answer together)."""
        budget = self.control.budget if self.control.thinking else None
        if budget is None:
            phase1, stops = list(max_tokens), []
        else:  # phase 1: the reasoning, up to </think> or the budget
            phase1, stops = [min(budget, m) for m in max_tokens], [self.think_end_id]
        outputs = self.generate([p.context for p in parents], self._settings(n, stops), phase1)
        forks: list[list[Trajectory]] = []
        answer: list[tuple[Trajectory, int]] = []  # (trajectory, tokens left for its answer)
        for parent, group, limit in zip(parents, outputs, max_tokens):
            forks.append([])
            for c in group:
                t = parent.fork()
                t.turns += 1
                t.turn_start = len(t.tokens)
                t.add(c.token_ids, c.logprobs, generated=True)
                t.truncated = c.truncated
                forks[-1].append(t)
                if budget is None:
                    continue
                left = limit - len(c.token_ids)
                if c.truncated and left > 0:  # the budget, not the turn limit, stopped it
                    t.add([self.think_end_id], None, generated=False)
                    t.forced_think_end += 1
                    t.truncated, left = left <= 1, left - 1
                elif c.truncated or not c.token_ids or c.token_ids[-1] != self.think_end_id:
                    continue  # cut by the turn limit, or ended (end-of-turn, another stop token)
                if left > 0:
                    answer.append((t, left))
                else:
                    t.truncated = True
        if answer:  # phase 2: the answer after the (closed) reasoning
            outputs = self.generate([t.context for t, _ in answer], self._settings(1, []), [k for _, k in answer])
            for (t, _), group in zip(answer, outputs):
                t.add(group[0].token_ids, group[0].logprobs, generated=True)
                t.truncated = group[0].truncated
        return forks


def continuation_ids(tokenizer, messages: list[dict[str, str]], thinking: bool = True) -> list[int]:
    """The tokens that follow a finished assistant turn (ending in the
    end-of-turn token) when ``messages`` are appended and the next assistant
    turn opens: the chat template's own rendering of those messages."""
    kwargs = {} if thinking else {"enable_thinking": False}
    base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    before = tokenizer.apply_chat_template(base, tokenize=False)
    after = tokenizer.apply_chat_template(base + messages, add_generation_prompt=True, tokenize=False, **kwargs)
    if not after.startswith(before):
        raise ValueError("chat template: appending messages changes the rendering of earlier turns")
    eos = tokenizer.eos_token
    tail = before[before.rindex(eos) + len(eos):] if eos in before else ""
    return tokenizer.encode(tail + after[len(before):], add_special_tokens=False)


@dataclass
class EpisodeLimits:
    max_turns: int = 8
    max_tokens: int = 512
    """Tokens after the prompt, generated and appended, over the whole episode."""
    max_new_tokens: int = 48
    """Tokens per model turn."""


class EpisodeClient:
    """What the loop needs from the environments (``EnvironmentPool`` provides it)."""

    def start(self, tasks: list) -> list[str]: ...
    def step(self, keys: list[str], texts: list[str]) -> list[list[dict] | None]: ...


def run_episodes(tasks: list, prompts: list[list[int]], n: int, turn: TurnGenerator, envs: EpisodeClient,
                 tokenizer, limits: EpisodeLimits, thinking: bool = True
                 ) -> tuple[list[list[Trajectory]], list[list[str]]]:
    """``n`` episodes per task: the trajectories and the episode keys, per task
    (``envs.finish(keys)`` scores the episodes)."""
    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    roots = [Trajectory(p) for p in prompts]
    groups = turn(roots, n, [min(limits.max_new_tokens, limits.max_tokens)] * len(roots))
    trajs = [t for g in groups for t in g]
    keys = envs.start([task for task, g in zip(tasks, groups) for _ in g])
    live = [i for i, t in enumerate(trajs) if not t.truncated]  # a cut turn ends the episode where it stands
    while live:
        replies = envs.step([keys[i] for i in live], [decode(trajs[i].last_turn) for i in live])
        go_on = []
        for i, reply in zip(live, replies):
            t = trajs[i]
            if reply is None or t.turns >= limits.max_turns:
                continue  # a final answer, or the turn limit: scored as it stands
            ids = continuation_ids(tokenizer, reply, thinking)
            if len(t.tokens) + len(ids) >= limits.max_tokens:
                t.truncated = True  # no room for the reply and another turn
                continue
            t.add(ids, None, generated=False)
            go_on.append(i)
        if not go_on:
            break
        room = [min(limits.max_new_tokens, limits.max_tokens - len(trajs[i].tokens)) for i in go_on]
        for i, new in zip(go_on, turn([trajs[i] for i in go_on], 1, room)):
            trajs[i] = new[0]
        live = [i for i in go_on if not trajs[i].truncated]
    sizes = [len(g) for g in groups]
    bounds = [sum(sizes[:j]) for j in range(len(sizes) + 1)]
    return ([trajs[a:b] for a, b in zip(bounds, bounds[1:])], [keys[a:b] for a, b in zip(bounds, bounds[1:])])
