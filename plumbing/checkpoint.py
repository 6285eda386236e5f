"""
plumbing/checkpoint.py: the models the steps hand each other, and what every step asks of them.

  load_any              a checkpoint file or a local GPT-2 directory; a bad one is a one-line error
  load_language_model   a checkpoint (pretrain, sft, ppo) or a local GPT-2 directory, with its tokenizer
  load_reward_model     the RM (gpt.ScalarModel) with its tokenizer and the bias that puts
                        demonstrations at 0
  respond               answers to prompts: chat format for SFT and later stages, plain text for a
                        base model (with few-shot examples if given); the fast engine generates
  score_texts           the RM's score of (prompt, response) pairs
  lm_loss               next-token loss on held-out corpus text (pretraining, and the "alignment tax")
  export_hf             a model out as a Hugging Face directory: a policy for transformers' GPT2LMHeadModel,
                        the reward model as GPT2ForSequenceClassification (the form TRL reads)

    python -m plumbing.checkpoint out/smoke/sft.pt      # inspect a checkpoint or a GPT-2 directory
    python -m plumbing.checkpoint out/smoke/ppo.pt --export out/hf/ppo   # ... and export it
"""

import contextlib
import json
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from gpt import GPT, HF_CONV1D, ScalarModel, load_checkpoint, reward_scores
from plumbing import ddp, engine
from plumbing.cli import UserError, arg, ensure_out_dir, parse_config, run_cli
from plumbing.tokenizer import Tokenizer, encode_responses, gpt2_tokenizer, left_pad, save_hf_tokenizer

# -----------------------------------------------------------------------------
# Loading a language model with its tokenizer


def load_any(path, device="cpu"):
    """A checkpoint file of this project or a Hugging Face GPT-2 directory -> (model, metadata).
    The model file's ValueError (a truncated, foreign or misshapen file) becomes a UserError: one line."""
    try:
        if os.path.isdir(path):
            return GPT.from_pretrained(path).to(device), {}
        return load_checkpoint(path, device)
    except ValueError as e:
        raise UserError(str(e)) from None


def hf_state_dict(model):
    """Our weights under Hugging Face GPT-2 names and layout (the inverse of GPT.from_pretrained), so
    transformers can run the very same model (tools/bench.py, tests)."""
    return {key: (w.t() if key.endswith(HF_CONV1D) else w).contiguous().clone()
            for key, w in model.state_dict().items() if key != "lm_head.weight"}  # lm_head is tied to wte


def hf_config(hf_dir):
    """A GPT-2 directory's config.json as a dict (load_any has checked that it reads)."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        return json.load(f)


def resize_vocab(model, vocab_size):
    """Grow the (tied) token embedding to vocab_size rows, new rows set to the mean embedding:
    how a GPT-2 checkpoint gets the chat format's special tokens."""
    old = model.transformer.wte.weight.data
    if vocab_size <= old.size(0):
        return model
    new = nn.Embedding(vocab_size, old.size(1)).to(old.device, old.dtype)
    new.weight.data[:old.size(0)] = old
    new.weight.data[old.size(0):] = old.mean(0)
    model.transformer.wte = new
    model.lm_head.weight = new.weight
    model.config.vocab_size = vocab_size
    return model


def load_language_model(path, device="cpu"):
    """A checkpoint of this project (pretrain, sft, ppo) or a local GPT-2 directory -> (model,
    tokenizer, stage). SFT, PPO and chat.py all start from here; a reward model, a checkpoint
    without a tokenizer or a vocabulary that does not fit is a one-line error."""
    model, ckpt = load_any(path, device)
    if os.path.isdir(path):
        hf = hf_config(path)
        if any("ForSequenceClassification" in a for a in hf.get("architectures") or []):
            raise UserError(f"{path}: a reward model's directory; a language model is needed here")
        tok = gpt2_tokenizer(path)
        stage = hf.get("instructgpt", {}).get("stage", "pretrain")  # a directory export_hf wrote names its stage
        resize_vocab(model, tok.vocab_size)  # room for <|pad|>, <|user|>, <|assistant|>
    elif ckpt.get("stage") == "reward":
        raise UserError(f"{path}: a reward-model checkpoint; a language model (pretrain, sft or ppo) is needed here")
    elif "tokenizer" not in ckpt:
        raise UserError(f"{path}: checkpoint has no tokenizer")
    else:
        tok, stage = Tokenizer.from_state(ckpt["tokenizer"]), ckpt.get("stage", "sft")
    if model.config.vocab_size < tok.vocab_size:
        raise UserError(f"{path}: model vocabulary {model.config.vocab_size} is smaller than its tokenizer's "
                        f"{tok.vocab_size}")
    return model.to(device), tok, stage


def load_start(cfg, device, default="pretrain.pt"):
    """The model and tokenizer a stage starts from: --init, else OUT_DIR/<default>."""
    path = cfg.init or os.path.join(cfg.out_dir, default)
    if not cfg.init and not os.path.exists(path):
        raise UserError(f"{path}: no such checkpoint; run the stage before this one first or pass --init")
    model, tok, _ = load_language_model(path, device)
    model.set_dropout(cfg.dropout)
    return model, tok, path


# -----------------------------------------------------------------------------
# The reward model, and what the steps ask of it

def load_reward_model(path, device="cpu"):
    """-> (ScalarModel with the trained head, tokenizer, bias, scale). PPO's reward is the
    score minus the bias (demonstrations then score 0 on average); the scale is reported."""
    if os.path.isdir(path):
        raise UserError(f"{path}: a directory; the reward model is read from its checkpoint (reward.pt)")
    gpt, ckpt = load_any(path, device)
    if ckpt.get("stage") != "reward" or "reward_head" not in ckpt:
        raise UserError(f"{path}: not a reward-model checkpoint (stage {ckpt.get('stage')!r})")
    rm = ScalarModel(gpt)
    rm.head.load_state_dict(ckpt["reward_head"])
    return rm.to(device), Tokenizer.from_state(ckpt["tokenizer"]), ckpt["reward_bias"], ckpt["reward_scale"]


def load_rlhf_models(init, start, reward_path, device):
    """RLHF's models: the policy (trained, from `start`, default `init`), the reference `init`
    (frozen) and the RM (frozen), which must share one vocabulary. -> (policy, ref, rm, tokenizer,
    reward bias, reward scale)."""
    ref, tok, _ = load_language_model(init, device)
    policy, policy_tok, _ = load_language_model(start or init, device)
    if policy_tok.state() != tok.state():
        raise UserError(f"{start}: its vocabulary differs from {init}'s")
    ref.eval().requires_grad_(False)
    rm, rm_tok, reward_bias, reward_scale = load_reward_model(reward_path, device)
    if rm_tok.state() != tok.state():
        raise UserError(f"{reward_path}: its vocabulary differs from {init}'s")
    rm.eval().requires_grad_(False)
    return policy, ref, rm, tok, reward_bias, reward_scale


@torch.no_grad()
def score_texts(rm, tok, prompts, responses, block_size, device, batch_size=64):
    """Raw RM scores (before the demonstration bias) of (prompt, response) pairs."""
    out = []
    rm.eval()
    for i in range(0, len(prompts), batch_size):
        tokens, mask = encode_responses(tok, prompts[i:i + batch_size], responses[i:i + batch_size], block_size)
        out += reward_scores(rm, tokens.to(device), mask.to(device)).tolist()
    return out


# -----------------------------------------------------------------------------
# Answering prompts, and the loss on held-out text

def base_prompt(prompt):
    """The raw text a base (pretrained) model continues: Q/A pages exist in its corpus, loosely."""
    return f"Q: {prompt}\nA:"


def fewshot_prompt(prompt, examples):
    """examples: [(prompt, answer), ...] shown as Q/A pairs before the question."""
    return "".join(f"Q: {p}\nA: {a}\n\n" for p, a in examples) + base_prompt(prompt)


def fit_examples(tok, prompt, examples, room):
    """The last few-shot examples that fit `room` tokens with the question: whole examples are
    dropped from the front, never cut mid-example (a cut example teaches the base model garbage)."""
    k = len(examples)
    while k and len(tok.encode(fewshot_prompt(prompt, examples[len(examples) - k:]))) > room:
        k -= 1
    return examples[len(examples) - k:]


@torch.no_grad()
def respond(model, tok, prompts, mode="chat", max_new_tokens=48, temperature=0.0, batch_size=64,
            generator=None, examples=None):
    """Answer each prompt. mode "chat": the SFT format, the answer ends at EOS. mode "base" /
    "fewshot": the plain text a pretrained model continues (base_prompt, or with `examples` Q/A
    pairs first); the answer ends at EOS or at the first newline, as an API's stop sequence would
    end it. Returns the answer strings."""
    device = next(model.parameters()).device
    room = model.config.block_size - max_new_tokens  # prompt tokens that fit beside the answer
    answers = []
    prompts = ddp.share(prompts)  # torchrun: each rank answers its share, and all get every answer
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        if mode == "chat":
            ids = [tok.chat_prompt(p) for p in chunk]
        else:
            text = [base_prompt(p) if mode == "base" else fewshot_prompt(p, fit_examples(tok, p, examples, room))
                    for p in chunk]
            ids = [tok.encode(t) for t in text]
        idx, mask, _ = left_pad(ids, tok.pad_id, max_len=room)
        out = engine.generate(model, idx.to(device), max_new_tokens, attention_mask=mask.to(device),
                              temperature=temperature, eos_id=tok.eos_id, pad_id=tok.pad_id, generator=generator,
                              suppress_ids=tok.never_sampled)
        T = idx.size(1)
        for row, rmask in zip(out.tokens[:, T:].tolist(), out.response_mask.tolist()):
            row = [t for t, m in zip(row, rmask) if m and t != tok.eos_id]
            text = tok.decode(row)
            answers.append(text.split("\n")[0].strip() if mode != "chat" else text.strip())
    return ddp.gather(answers)


@torch.no_grad()
def lm_loss(model, ids, device, autocast=None, max_windows=200):
    """Mean next-token loss over consecutive block_size windows of a token stream: the
    pretraining loss, also the "alignment tax" of RLHF when measured on held-out corpus text."""
    was_training = model.training
    model.eval()
    T = model.config.block_size
    starts = list(range(0, len(ids) - T - 1, T))[:max_windows]
    total = 0.0
    for i in range(0, len(starts), 16):
        x = torch.stack([ids[s:s + T] for s in starts[i:i + 16]]).to(device)
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts[i:i + 16]]).to(device)
        with (autocast or contextlib.nullcontext)():
            total += model(x, y)[1].item() * len(x)
    model.train(was_training)
    return total / max(1, len(starts))


# -----------------------------------------------------------------------------
# Out to Hugging Face: the model runs in transformers with the same logits and scores

def export_hf(path, out_dir):
    """Write a checkpoint of this project (or a GPT-2 directory) as a Hugging Face GPT-2 directory:
    config.json, model.safetensors, the tokenizer's files and, for a language model,
    generation_config.json. A language model becomes a GPT2LMHeadModel; the reward model a
    GPT2ForSequenceClassification with one label, read at the last token that is not padding (so
    pad_token_id is set). Returns the stage exported. Needs safetensors, not transformers."""
    from safetensors.torch import save_file
    _, ckpt = load_any(path)
    if ckpt.get("stage") == "reward":
        rm, tok, reward_bias, reward_scale = load_reward_model(path)
        model, stage = rm.gpt, "reward"
    else:
        model, tok, stage = load_language_model(path)
    c = model.config
    if not c.bias:
        raise UserError(f"{path}: a model without biases; GPT-2's layers always have them")
    ensure_out_dir(out_dir, flag="--export")
    config = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size,
                  n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_inner=None,
                  activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=c.dropout,
                  embd_pdrop=c.dropout, attn_pdrop=c.dropout, tie_word_embeddings=True, bos_token_id=tok.eos_id,
                  eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, instructgpt=dict(stage=stage))
    weights = hf_state_dict(model)
    if stage == "reward":
        # transformers' score head has no bias; ln_f feeds nothing but the score here, so the head's
        # bias moves into ln_f's: w.(h + b w / |w|^2) = w.h + b, the same score r(x, y)
        w, b = rm.head.weight.detach()[0], rm.head.bias.detach()[0]
        if b != 0:
            weights["transformer.ln_f.bias"] += b * w / (w @ w)
        weights["score.weight"] = rm.head.weight.detach().clone()
        config.update(architectures=["GPT2ForSequenceClassification"], id2label={"0": "reward"},
                      label2id={"reward": 0})
        config["instructgpt"].update(reward_bias=reward_bias, reward_scale=reward_scale, note=(
            "score = r(x, y), read at the last token before padding; PPO's reward is r - reward_bias (the "
            "demonstrations' mean score, Section 3.5); ln_f's bias carries the scalar head's bias"))
    else:
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:  # greedy, as our evaluation answers
            json.dump(dict(bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                           suppress_tokens=tok.never_sampled), f, indent=1)  # never sampled here either
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    save_hf_tokenizer(tok, out_dir, c.block_size, padding_side="right" if stage == "reward" else "left")
    return stage


# -----------------------------------------------------------------------------

@dataclass
class Args:
    path: str = arg("", "a .pt checkpoint (out/<run>/sft.pt, ...) or a GPT-2 directory", positional=True)
    export: str = arg("", "write the model as a Hugging Face directory here (a language model for transformers' "
                      "AutoModelForCausalLM, the reward model for AutoModelForSequenceClassification)")


def main():
    args = parse_config(Args, description="Inspect a checkpoint of this project or a local Hugging Face "
                        "GPT-2 directory: its config, size and metadata; with --export, write it as a Hugging "
                        "Face directory that transformers loads (and --init takes back).")
    path = args.path
    model, ckpt = load_any(path)
    print(f"{path}: {model.num_params() / 1e6:.2f}M parameters")
    for k, v in asdict(model.config).items():
        print(f"  {k:12s} {v}")
    extra = [k for k in ckpt if k not in ("model", "model_args")]
    if extra:
        print("  metadata:", ", ".join(extra))
    if args.export:
        stage = export_hf(path, args.export)
        kind = "AutoModelForSequenceClassification" if stage == "reward" else "AutoModelForCausalLM"
        print(f"exported {stage} to {args.export}: load it with transformers' {kind}.from_pretrained")


if __name__ == "__main__":
    run_cli(main)
