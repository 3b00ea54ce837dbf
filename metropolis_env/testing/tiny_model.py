"""A tiny random-weight llama model in GGUF, so tests can run a real llama.cpp server offline.

The model is nonsense (random weights) but exercises the whole serving path: tokenizer, prefill,
decode, sampling, usage counts, context-length checks. Llama architecture, 64-dim, 2 blocks, a
byte-level GPT-2 tokenizer of 256 byte tokens + a few merges + BOS/EOS (~300 tokens); ~0.4 MB,
loads in about a second. llama.cpp refuses a gpt2 tokenizer without merges ("cannot find
tokenizer merges"), hence the handful of merges. Needs the `gguf` package (extra `llamacpp`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Merges of common English pairs (GPT-2 byte alphabet: "Ġ" is the space byte).
_MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"), ("Ġ", "a"),
           ("r", "e"), ("a", "t"), ("o", "r"), ("e", "n"), ("Ġ", "s"), ("e", "d"), ("Ġ", "w"),
           ("i", "s"), ("Ġ", "o"), ("i", "t"), ("e", "s"), ("a", "l"), ("a", "r"), ("Ġ", "c"),
           ("n", "d"), ("Ġ", "b"), ("o", "u"), ("Ġ", "m"), ("Ġ", "f"), ("l", "e"), ("i", "c"),
           ("Ġ", "p"), ("a", "s"), ("o", "m"), ("Ġ", "d"), ("l", "l"), ("Ġ", "h"), ("v", "e"),
           ("o", "w")]
BOS = "<|bos|>"
EOS = "<|eos|>"


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255 (byte-level BPE alphabet)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars = {}
    n = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types) of the tiny byte-level tokenizer."""
    import gguf

    tokens = _bytes_to_unicode()
    merges = []
    for a, b in _MERGES:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += [BOS, EOS]
    types += [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    return tokens, merges, [int(t) for t in types]


def write_tiny_model(path: str | os.PathLike, *, seed: int = 0, n_embd: int = 64,
                     n_layer: int = 2, n_head: int = 4, n_ff: int = 128,
                     context_length: int = 2048) -> Path:
    """Write a random-weight llama GGUF model to `path` and return the path.

    The same seed writes the same weights, so greedy (temperature 0) answers are reproducible
    across processes and restarts. `context_length` is the model's training context; the
    server's n_ctx (what requests are checked against) is set when it starts.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, merges, types = tiny_vocab()
    n_vocab = len(tokens)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("metropolis-env tiny random llama")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_add_bos_token(False)

    # numpy shapes are (rows = outputs, cols = inputs), as the HF converters pass them.
    writer.add_tensor("token_embd.weight", w(n_vocab, n_embd, scale=1.0))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    # Zero logits for bytes outside printable ASCII: greedy decoding then never picks them (some
    # other logit is positive), so answers are readable and never end inside a multi-byte UTF-8
    # character (llama-cpp-python decodes past max_tokens to finish one, breaking exact lengths).
    output = w(n_vocab, n_embd)
    output[[b for b in range(256) if not 0x20 <= b <= 0x7E]] = 0.0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
