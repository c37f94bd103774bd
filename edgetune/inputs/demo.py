"""The built-in demo: a small Llama-architecture base model and an instruction dataset, made offline.

The base is pre-trained briefly on a generated corpus in which word-list operations are *stated in
prose* ("the last word of red fox jumps is jumps."). It has never seen an instruction template, so
asked in the alpaca format it cannot answer. LoRA fine-tuning on the demo dataset teaches it the
format; held-out accuracy goes from ~0 to high. Everything is deterministic and cached once.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from edgetune.events import Callback, Event, TrainMetrics, ignore
from edgetune.fsutil import atomic_dir, cache_dir, write_text

DEMO_VERSION = "3"
WORDS = (
    "apple river stone cloud green quiet bright tiger window garden yellow silver orange summer winter "
    "forest candle mirror rabbit castle pencil bottle ladder rocket planet button hammer jacket kitten "
    "lemon marble needle ocean pepper rainbow saddle tunnel violet wallet anchor basket copper dragon "
    "engine feather glove harbor island jungle kettle lantern meadow nickel oyster pillow quartz ribbon "
    "shadow temple umbrella valley wagon zebra blue red black white small large happy slow fast cold warm "
    "soft loud old young tall short dark light sweet sour brave calm eager gentle honest jolly kind lucky"
).split()
TASKS = ("last", "twice")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def _pick(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def task_example(task: str, rng: random.Random) -> tuple[str, str, str]:
    """(instruction, prose statement prefix, answer) for one generated item of `task`."""
    words = _pick(rng, rng.randint(3, 5) if task in ("last", "first") else rng.randint(2, 3))
    text = " ".join(words)
    if task == "last":
        return f"What is the last word of: {text}", f"the last word of {text} is", words[-1]
    if task == "first":
        return f"What is the first word of: {text}", f"the first word of {text} is", words[0]
    if task == "reverse":
        return f"Reverse the order of the words: {text}", f"the words {text} in reverse order are", " ".join(words[::-1])
    word = words[0]
    return f"Say this word twice: {word}", f"the word {word} said twice is", f"{word} {word}"


def corpus(n_docs: int, seed: int = 0) -> list[str]:
    """Prose the base is pre-trained on: operation statements and plain word sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        if rng.random() < 0.9:
            _, prefix, answer = task_example(rng.choice(TASKS), rng)
            # Half the answers start a line, so the base knows those words' line-start tokens too.
            docs.append(f"{prefix} {answer}." if rng.random() < 0.5 else f"{prefix}\n{answer}")
        else:
            docs.append(" ".join(_pick(rng, rng.randint(4, 9))) + ".")
    return docs


def write_dataset(path: Path, n_rows: int = 2000, seed: int = 1) -> Path:
    """The demo instruction dataset (alpaca JSONL). Seeds differ from the corpus's on purpose."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_rows):
        instruction, _, answer = task_example(TASKS[i % len(TASKS)], rng)
        lines.append(json.dumps({"instruction": instruction, "input": "", "output": answer}))
    write_text(path, "\n".join(lines) + "\n")  # temp + rename: a cut-short file is never cached
    return path


def demo_dataset_path() -> Path:
    path = cache_dir() / f"demo-v{DEMO_VERSION}" / "demo_tasks.jsonl"
    if not path.exists():
        write_dataset(path)
    return path


def train_tokenizer(texts: list[str], vocab_size: int = 1024, add_bos: bool = False):
    """Byte-level BPE (GPT-2 pre-tokenizer) trained locally, wrapped for transformers. With
    `add_bos` it puts <|endoftext|> in front of every text, as Llama and Gemma tokenizers do."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if add_bos:
        bos = ("<|endoftext|>", tok.token_to_id("<|endoftext|>"))
        tok.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A {bos[0]} $B",
                                                           special_tokens=[bos])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        unk_token=None, additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.add_bos_token = add_bos
    return fast


def demo_config(vocab_size: int, tiny: bool = False):
    """The demo base's shape; `tiny` is a faster one for tests."""
    from transformers import LlamaConfig

    hidden, inter, layers, heads, kv = (64, 128, 2, 2, 1) if tiny else (128, 384, 4, 4, 2)
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def demo_base_dir() -> Path:
    return cache_dir() / f"demo-v{DEMO_VERSION}" / "base"


def demo_base_ready() -> bool:
    """Built already (building takes a minute or two on 2 cores)."""
    return (demo_base_dir() / "model.safetensors").exists()


def build_demo_base(out_dir: Path | None = None, steps: int = 1000, on_event: Callback = ignore,
                    tiny: bool = False, add_bos: bool = False) -> Path:
    """Build (once) and return the demo base model folder (HF format, safetensors, tokenizer)."""
    out_dir = Path(out_dir) if out_dir else demo_base_dir()
    if (out_dir / "model.safetensors").exists():
        return out_dir
    import torch
    from transformers import LlamaForCausalLM

    on_event(Event("base", "start", "building the demo base model (once, about a minute)"))
    torch.manual_seed(0)
    docs = corpus(4_000 if tiny else 40_000)
    tokenizer = train_tokenizer(docs, 512 if tiny else 1024, add_bos)
    config = demo_config(len(tokenizer), tiny)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = LlamaForCausalLM(config)

    # Pack documents separated by <|endoftext|> into fixed-length rows.
    sep = tokenizer.bos_token_id
    ids: list[int] = []
    for doc in docs:
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [sep]
    seq = 64
    data = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    batch = 32
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.time()
    for step in range(steps):
        rows = data[torch.randint(0, len(data), (batch,), generator=gen)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == steps - 1:
            elapsed = time.time() - t0
            on_event(TrainMetrics(phase="base", message="pre-training demo base", step=step + 1, total=steps,
                                  loss=loss.item(), tokens_per_s=(step + 1) * batch * seq / max(elapsed, 1e-9),
                                  eta_s=elapsed / (step + 1) * (steps - step - 1)))
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    on_event(Event("base", "done", f"demo base ready: {out_dir}"))
    return out_dir
