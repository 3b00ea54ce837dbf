"""Build a Llama-3-8B-shaped model with random weights and a word-level tokenizer, offline, and
time its forward passes (prefill and one decode iteration by batch size) in this process.

    python build_model.py MODEL_DIR PROFILE_JSON

Recipe: docs/REAL_SERVER.md. The tokenizer's vocabulary is the words t0 ... t128255 and it
has no end-of-sequence token, so a prompt of N words is exactly N tokens and every answer is
exactly max_tokens long: trace replay with the paper's token counts.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 128256


def build(model_dir: str) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=VOCAB,
                      rope_theta=500000.0, max_position_embeddings=8192,
                      eos_token_id=None, bos_token_id=None, pad_token_id=None)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    model.save_pretrained(model_dir)
    GenerationConfig(eos_token_id=None, bos_token_id=None, do_sample=False).save_pretrained(model_dir)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(model_dir)
    return model


def _time(fn, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps / 1000.0


@torch.no_grad()
def profile(model: LlamaForCausalLM, prompt: int = 642, batches=(1, 2, 4, 8, 16, 32, 64, 128)) -> dict:
    """Seconds of one prefill of `prompt` tokens and of one decode iteration per batch size,
    with a KV cache of `prompt` tokens per sequence (eager PyTorch, as `transformers serve` runs)."""
    from transformers import DynamicCache

    out = {"prompt_tokens": prompt, "prefill_s": {}, "decode_iteration_s": {}}
    for b in (1, 8):
        ids = torch.randint(0, VOCAB, (b, prompt), device="cuda")
        out["prefill_s"][b] = _time(lambda: model(ids, use_cache=False), reps=3)
    for b in batches:
        ids = torch.randint(0, VOCAB, (b, prompt), device="cuda")
        cache = DynamicCache()
        model(ids, past_key_values=cache, use_cache=True)
        nxt = torch.randint(0, VOCAB, (b, 1), device="cuda")
        length = cache.get_seq_length()

        def step():
            # one decode iteration on a cache of `prompt` tokens; crop back so every rep is alike
            model(nxt, past_key_values=cache, use_cache=True)
            cache.crop(length)

        out["decode_iteration_s"][b] = _time(step)
        del cache, ids
        torch.cuda.empty_cache()
    return out


def main() -> None:
    model_dir, profile_json = sys.argv[1], sys.argv[2]
    t0 = time.time()
    model = build(model_dir)
    built = time.time() - t0
    try:
        prof = profile(model)
    except Exception as e:  # the profile is a bonus: never lose the model (and the bench) over it
        prof = {"error": f"{type(e).__name__}: {e}"}
    prof.update(build_and_save_s=built, gpu=torch.cuda.get_device_name(0),
                params=sum(p.numel() for p in model.parameters()), torch=torch.__version__)
    with open(profile_json, "w") as f:
        json.dump(prof, f, indent=1)
    print(json.dumps(prof, indent=1))


if __name__ == "__main__":
    main()
