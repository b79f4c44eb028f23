"""Small models made from transformers configs, with a character tokenizer.

No weights can be downloaded on the machines this project targets, so the
default policy is built here: a character-level tokenizer (each digit one
token, so arithmetic is learnable by a 1M-parameter model) with the chat and
reasoning markers as single tokens, and a tiny causal LM in one of three
architectures: dense Qwen3 (default), Qwen3-MoE, and a Nemotron-H hybrid
(Mamba-2 + attention + MoE with expert-score correction bias, the Nano
architecture in miniature). Any Hugging Face causal-LM folder can be used
instead (``model.path``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from rl.config import ModelInitConfig

SPECIAL_TOKENS = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Markers that must stay visible in decoded text (not "special"), but are
# one token each so the format costs the tiny model little.
MARKER_TOKENS = [
    "<think>", "</think>", "\\boxed{",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<function=", "</function>", "<parameter=", "</parameter>",
]
CHARS = [chr(i) for i in range(32, 127)] + ["\n", "\t"]

# ChatML (compact: no newlines between turns) with Qwen3's reasoning rule
# (docs/recipe.md section 2): the reasoning of assistant turns before the last
# user message is dropped; that of the current turn's tool steps is kept.
# Tool results are user turns of <tool_response> blocks, consecutive ones
# merged. ``enable_thinking=False`` opens the assistant turn with an empty
# think block.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- set content = message['content'] -%}"
    "{%- if message['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1] -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'tool' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' -%}<|im_start|>user{%- endif -%}"
    "<tool_response>{{ content }}</tool_response>"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}<|im_end|>{%- endif -%}"
    "{%- else -%}"
    "<|im_start|>{{ message['role'] }}\n{{ content }}<|im_end|>\n"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking -%}<think></think>{%- endif -%}"
    "{%- endif -%}"
)


def build_tokenizer():
    """A character-level fast tokenizer with single-token chat/reasoning markers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + MARKER_TOKENS + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKER_TOKENS])
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        model_max_length=2048,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model_config(init: ModelInitConfig, tokenizer):
    """A transformers config for the tiny model of ``init.arch``."""
    # Untied head: vLLM's in-place refit cannot follow a tied one (rl/rollout.py).
    shared = dict(
        vocab_size=len(tokenizer),
        hidden_size=init.hidden_size,
        num_attention_heads=init.num_heads,
        num_key_value_heads=init.num_kv_heads,
        head_dim=init.head_dim,
        intermediate_size=init.intermediate_size,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    common = dict(shared, num_hidden_layers=init.num_layers)
    if init.arch == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(**common)
    if init.arch == "qwen3_moe":
        from transformers import Qwen3MoeConfig

        return Qwen3MoeConfig(
            **common,
            num_experts=init.num_experts,
            num_experts_per_tok=init.experts_per_token,
            moe_intermediate_size=init.intermediate_size // 2,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
    if init.arch == "nemotron_h":
        from transformers import NemotronHConfig

        # Nano's pattern in miniature: Mamba-2 (M), MoE (E) and attention (*) layers.
        pattern = ("ME*E" * init.num_layers)[: max(init.num_layers, 4)]
        return NemotronHConfig(
            **shared,
            num_hidden_layers=len(pattern),
            hybrid_override_pattern=pattern,
            mamba_num_heads=4,
            mamba_head_dim=init.hidden_size // 4,
            ssm_state_size=16,
            n_groups=1,
            chunk_size=64,
            n_routed_experts=init.num_experts,
            num_experts_per_tok=init.experts_per_token,
            moe_intermediate_size=init.intermediate_size // 2,
            moe_shared_expert_intermediate_size=init.intermediate_size // 2,
            n_group=1,
            topk_group=1,
        )
    raise ValueError(f"model.init.arch: unknown architecture {init.arch!r}")


def init_model(init: ModelInitConfig, out_dir: str | Path, seed: int = 0) -> Path:
    """Build tokenizer and randomly initialised model; save as a HF folder."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = build_model_config(init, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_model_dir(path: str | Path, key: str = "model.path") -> Path:
    """Fail fast, naming the key, when ``path`` is not a usable HF folder. A run
    folder (or one checkpoint of it) stands for the policy of its latest checkpoint."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{key}: no such folder: {path}")
    if (path / "policy" / "model" / "config.json").is_file():  # a checkpoint
        path = path / "policy" / "model"
    elif (path / "checkpoints").is_dir():  # a run folder
        from rl.checkpoint import latest_checkpoint

        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{key}: run folder {path} has no checkpoint yet")
        path = latest[1] / "policy" / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{key}: {path} has no config.json; expected a Hugging Face model folder "
            "(save_pretrained output), or leave model.path unset to use the built-in tiny model"
        )
    check_model_files(path, key)
    return path


class CorruptModel(ValueError):
    """A model folder file that cannot be what it claims (truncated weights, unreadable JSON)."""


def check_model_files(path: Path, key: str = "model.path") -> None:
    """Read what every engine and the trainer will read, cheaply, and name the first bad file:
    the JSON files must parse; each safetensors file must hold its header and exactly the
    bytes its header describes (a truncated copy or download fails here, in a second,
    instead of deep inside an engine's start-up)."""
    import struct

    for f in sorted(path.glob("*.json")):
        try:
            json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptModel(f"{key}: {f} is not valid JSON ({exc}); the model folder is damaged") from None
    shards = sorted(path.glob("*.safetensors"))
    if not shards and not any(path.glob("*.bin")):
        raise CorruptModel(f"{key}: {path} has no weights (*.safetensors or *.bin)")
    for f in shards:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise CorruptModel(f"{key}: {f} is truncated or not a safetensors file "
                                   f"({size} bytes; its header claims {n}); the model folder is damaged")
            try:
                header = json.loads(fh.read(n))
            except (ValueError, UnicodeDecodeError):
                raise CorruptModel(f"{key}: {f} has an unreadable safetensors header; the model folder is damaged") \
                    from None
        ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
        if 8 + n + max(ends, default=0) != size:
            raise CorruptModel(f"{key}: {f} is truncated or padded: {size} bytes, its header describes "
                               f"{8 + n + max(ends, default=0)}; the model folder is damaged")


def cache_dir() -> Path:
    return Path(os.environ.get("RL_CACHE_DIR", Path.home() / ".cache" / "rl-posttrain"))


def builtin_model_key(init: ModelInitConfig, sft_fingerprint: dict) -> str:
    tokenizer = {"special": SPECIAL_TOKENS, "markers": MARKER_TOKENS, "template": CHAT_TEMPLATE}
    blob = json.dumps({"init": init.model_dump(), "sft": sft_fingerprint, "tokenizer": tokenizer}, sort_keys=True)
    return f"tiny-{init.arch}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
