"""
gpt.py: the one model file every step shares. A GPT-2 written out in the order of its diagram
(attention, MLP, block, config, model), then what RLHF needs from a language model: per-token
log-probs (SFT, the KL to SFT, PPO's ratios), batched generation of left-padded prompts with
per-row EOS and the sampling log-probs (rollouts), checkpoints, a local GPT-2 directory.

InstructGPT (Ouyang et al. 2022, arXiv 2203.02155) starts every model from GPT-3 (Section 3.5); a
tiny GPT of the same family stands in for it here. The architecture is GPT-2's (Radford et al.
2019): pre-LayerNorm blocks, GELU (tanh form), learned positions, tied input and output embeddings.
`GPT.generate` is the generation to read; plumbing/engine.py makes the same computation fast for
rollouts (tests hold the two equal, token for token). The reward model is this GPT with a scalar
head in place of its unembedding (`ScalarModel`, read at the last real token by `reward_scores`).

Where it departs from the paper / GPT-3:
  1. Dense attention everywhere (GPT-3 alternates dense and locally banded sparse layers).
  2. Sizes are tiny (a few million parameters instead of 1.3B / 6B / 175B).
"""

import json
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


# -----------------------------------------------------------------------------
# The model, in the order of the diagram: attention, MLP, block, config, model

class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, mask=None, kv=None, slots=None):  # exercise: attention, Vaswani et al. 2017
        """x (B, T, C). mask: None for plain causal attention, else (B, 1, T, S), True (or 0) where
        a query may look at a key. kv: None, or this layer's KV cache (k, v), each (B, nh, S_cache, hs):
        the T new keys and values go into cache slots `slots` (T,), and the queries attend over the
        cache's first S slots (S from the mask, which hides padded and empty slots)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)                         # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:
            k_cache, v_cache = kv
            k_cache.index_copy_(2, slots, k.to(k_cache.dtype))          # slots is a tensor: no host sync
            v_cache.index_copy_(2, slots, v.to(v_cache.dtype))
            S = mask.size(-1)
            k, v = k_cache[:, :, :S], v_cache[:, :, :S]                  # (B, nh, S, hs)
        # softmax(q k^T / sqrt(hs) + mask) v, one fused kernel (flash attention on GPUs when plain causal)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                 # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, kv=None, slots=None):
        x = x + self.attn(self.ln_1(x), mask, kv, slots)
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 256    # longest sequence (prompt + response) the model can see
    vocab_size: int = 1024   # the BPE trained by plumbing/tokenizer.py, special tokens included (GPT-2: 50257)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0     # InstructGPT's SFT used residual dropout 0.2 (Appendix C.1)
    bias: bool = True        # biases in Linear and LayerNorm, as GPT-2


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),   # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),   # learned position embeddings
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.zeros_(module.bias)

    @staticmethod
    def from_pretrained(hf_dir):  # a local Hugging Face GPT-2 directory -> GPT with the same logits
        return load_hf_gpt2(hf_dir)

    def set_dropout(self, p):
        """Change the dropout of a built model (SFT adds dropout to a model pretrained without)."""
        self.config.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, CausalSelfAttention):
                m.dropout = p

    def num_params(self):  # the tied embedding counted once, position embeddings left out
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def hidden_states(self, idx, pos=None, mask=None, cache=None, slots=None):
        """Token ids (B, T) -> final hidden states (B, T, C) after the last LayerNorm.
        pos: position ids, (T,) or (B, T); mask / cache / slots: see CausalSelfAttention."""
        T = idx.size(1)
        if pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        if mask is not None and mask.dtype == torch.bool:  # to 0 / -inf once, not in every layer
            dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, None if cache is None else cache.layer(i), slots)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, attention_mask=None):
        """idx (B, T) token ids; targets (B, T) next-token ids, -1 where no loss is wanted;
        attention_mask (B, T) 1 for real tokens, 0 for (left or right) padding.
        Returns logits (B, T, V) and the mean cross-entropy over positions with a target (or None)."""
        pos, mask = None, None
        if attention_mask is not None:
            pos, mask = padded_positions(attention_mask, self.config.block_size)
        logits = self.lm_head(self.hidden_states(idx, pos, mask))        # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, attention_mask=None, temperature=1.0, top_k=None,
                 top_p=None, eos_id=None, use_cache=True, pad_id=0, generator=None, suppress_ids=None):
        """Sample continuations of a batch of prompts, as RLHF rollouts need. idx (B, T) prompts padded
        on the left; attention_mask (B, T) 1 on real tokens; temperature 0 is greedy. A row stops after
        it samples eos_id and emits pad_id from then on, masked out of `response_mask`. suppress_ids:
        token ids never sampled (padding, the chat format's role tokens). use_cache=False recomputes
        the whole sequence at every step: the naive path. Returns Generation: tokens (B, T+N),
        response_mask (B, N), logprobs (B, N) under the distribution sampled from (after temperature,
        top-k, top-p; with temperature 0, the model's own log-probs)."""
        (B, T), N = idx.shape, max_new_tokens
        if N <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {N}")
        if T + N > self.config.block_size:
            raise ValueError(f"prompt of {T} tokens + max_new_tokens {N} exceeds block_size {self.config.block_size}")
        was_training, device = self.training, idx.device
        self.eval()
        attention_mask = torch.ones_like(idx) if attention_mask is None else attention_mask
        tokens = torch.cat([idx, torch.full((B, N), pad_id, device=device)], 1)  # (B, T+N) prompts, then responses
        valid = torch.cat([attention_mask.bool(), torch.zeros(B, N, dtype=torch.bool, device=device)], 1)  # real tokens
        logprobs, response_mask = torch.zeros(B, N, device=device), torch.zeros(B, N, dtype=torch.long, device=device)
        finished = torch.zeros(B, dtype=torch.bool, device=device)        # rows that sampled EOS
        banned = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=device)
        banned[torch.as_tensor(list(suppress_ids or []), dtype=torch.long)] = True

        # 1) prefill: the whole prompt in one pass (its keys and values into cache slots 0..T-1)
        pos, _ = padded_positions(attention_mask, self.config.block_size)
        if use_cache:
            cache = KVCache(self.config, B, T + N, device, self.transformer.wte.weight.dtype)
            slots = torch.arange(T, device=device)
            logits = self.lm_head(self.hidden_states(idx, pos, causal_mask(valid, slots), cache, slots)[:, -1])
        else:
            logits = self(idx, attention_mask=attention_mask)[0][:, -1]  # (B, V)
        pos = attention_mask.long().sum(1, keepdim=True) - 1              # (B, 1) the last prompt token's

        for i in range(N):
            # 2) sample the next token of every row; a finished row emits padding
            token, logprob = sample(logits.masked_fill(banned, float("-inf")), temperature, top_k, top_p, generator)
            token = torch.where(finished, pad_id, token)
            tokens[:, T + i], valid[:, T + i] = token, True
            logprobs[:, i] = torch.where(finished, 0.0, logprob)
            response_mask[:, i] = ~finished
            if eos_id is not None:
                finished |= token == eos_id
            if i == N - 1 or finished.all():  # (a host-device sync: plumbing/engine.py checks less often)
                N = i + 1
                break
            # 3) the next logits: the new token alone against the cache, or everything again (naive)
            if use_cache:
                pos, slot = pos + 1, torch.tensor([T + i], device=device)      # the new token's position and slot
                h = self.hidden_states(token[:, None], pos, valid[:, None, None, :T + i + 1], cache, slot)
                logits = self.lm_head(h[:, -1])
            else:
                logits = self(tokens[:, :T + i + 1], attention_mask=valid[:, :T + i + 1])[0][:, -1]

        self.train(was_training)
        return Generation(tokens[:, :T + N], response_mask[:, :N], logprobs[:, :N])


# -----------------------------------------------------------------------------
# The reward model (Section 3.5): "the SFT model with the final unembedding layer removed", a scalar head

class ScalarModel(nn.Module):
    """A GPT without its unembedding, plus a linear head giving one number per position.
    The reward model reads it at the last real token; PPO's value model reads every position."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(gpt.config.n_embd + 1))
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens, attention_mask):
        """tokens (B, T), attention_mask (B, T) with any padding -> scalars (B, T)."""
        pos, mask = padded_positions(attention_mask, self.gpt.config.block_size)
        h = self.gpt.hidden_states(tokens, pos, mask)                # (B, T, C)
        return self.head(h).squeeze(-1).float()                      # (B, T)


def last_index(attention_mask):
    """(B, T) mask -> (B,) index of the last real token, whatever the padding (left or right)."""
    T = attention_mask.size(1)
    return T - 1 - attention_mask.flip(1).long().argmax(1)


def reward_scores(rm, tokens, attention_mask):
    """The reward r(x, y) of each sequence: the head's output at its last real token. (B,)"""
    values = rm(tokens, attention_mask)                              # (B, T)
    return values.gather(1, last_index(attention_mask)[:, None]).squeeze(1)


# -----------------------------------------------------------------------------
# Generation helpers: padded batches, the KV cache, sampling, log-probs

@dataclass
class Generation:
    """What `generate` returns. N = number of generated steps (<= max_new_tokens)."""
    tokens: torch.Tensor         # (B, T+N) prompts (left-padded) followed by responses
    response_mask: torch.Tensor  # (B, N) 1 for real response tokens, up to and including EOS
    logprobs: torch.Tensor       # (B, N) log-prob of each sampled token (0 where masked)


class KVCache:
    """Keys and values of every layer for a whole generation, allocated once: (B, nh, S, hs) per
    layer, S = prompt + new tokens. Attention writes a step's keys into its slot and reads the
    slots filled so far."""

    def __init__(self, config, batch_size, length, device, dtype):
        shape = (batch_size, config.n_head, length, config.n_embd // config.n_head)  # (B, nh, S, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros_like(k) for k in self.k]

    def layer(self, i):
        return self.k[i], self.v[i]


def padded_positions(attention_mask, block_size):
    """attention_mask (B, T) 1 on real tokens -> position ids (B, T) counting real tokens only (a
    left-padded prompt starts at position 0) and the attention mask (B, 1, T, T) bool."""
    valid = attention_mask.bool()
    if valid.size(1) > block_size:
        raise ValueError(f"sequence of {valid.size(1)} tokens is longer than block_size {block_size}")
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)                      # (B, T)
    return pos, causal_mask(valid, torch.arange(valid.size(1), device=valid.device))


def causal_mask(valid, slots):
    """valid (B, S) real-token slots; slots (T,) where the T queries sit -> (B, 1, T, S) bool.
    A query sees real keys at or before its own slot, and always itself (so a padding position
    has something to attend to and its softmax stays finite; its output is unused)."""
    key = torch.arange(valid.size(1), device=valid.device)               # (S,)
    before = key[None, :] <= slots[:, None]                              # (T, S)
    itself = key[None, :] == slots[:, None]                              # (T, S)
    return ((valid[:, None, :] & before) | itself).unsqueeze(1)          # (B, 1, T, S)


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None, draws=None):  # exercise: sampling, Section 3.5
    """logits (B, V) -> next tokens (B,) and their log-probs (B,) under the distribution sampled
    from. Sampling inverts the cumulative distribution: one uniform draw per row, and the first token
    whose running sum of probabilities exceeds it. That costs B random numbers a step where an
    exponential race (argmax of p / Exp(1) noise) costs B x V, and needs no host-device sync,
    unlike the checks inside torch.multinomial. draws: (B, 1) uniform numbers in [0, 1) to use
    instead of drawing them from generator (plumbing/engine.py passes the draws of rows it kept)."""
    if temperature == 0:  # log p(token) = logit - logsumexp(logits): two passes over (B, V), not four
        token = logits.argmax(-1)
        return token, logits.gather(1, token[:, None]).squeeze(1).float() - torch.logsumexp(logits.float(), -1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:  # nucleus: the smallest set of tokens whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p                         # mass before this token already enough
        drop[:, 0] = False                                               # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    logp = F.log_softmax(logits, dim=-1)
    cdf = logp.exp().cumsum(-1)                                          # (B, V), never decreasing
    total = cdf[:, -1:]                                                  # 1, up to rounding
    u = draws if draws is not None else torch.rand(total.shape, device=total.device, generator=generator)
    u = u * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total
    # the first token whose running sum exceeds u; a zero-probability token (top-k, top-p, suppressed)
    # adds no width to the sum, so it is never that token
    token = torch.searchsorted(cdf, u, right=True).squeeze(1)
    return token, logp.gather(1, token[:, None]).squeeze(1)


def token_logprobs(model, tokens, attention_mask, with_entropy=False, temperature=1.0):
    """Per-token log-probs of sequences the model did not necessarily sample: tokens (B, T),
    attention_mask (B, T) -> logprobs (B, T-1), log p(tokens[:, t+1] | tokens[:, :t+1]), 0 where the
    predicted token is padding. SFT, the KL to SFT and PPO's ratios all read these, each with one
    explicit response mask. with_entropy: also the entropy (B, T-1) of each predicted distribution.
    temperature: of the distribution p (logits / temperature), as sampling at that temperature draws."""
    logits, _ = model(tokens, attention_mask=attention_mask)            # (B, T, V)
    logp_all = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    logp = logp_all.gather(2, tokens[:, 1:, None]).squeeze(2) * attention_mask[:, 1:]  # (B, T-1)
    if not with_entropy:
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1) * attention_mask[:, 1:]
    return logp, entropy


# -----------------------------------------------------------------------------
# Checkpoints, and a local Hugging Face GPT-2 directory

def atomic_save(obj, path):
    """torch.save to a temporary file, then rename it over `path`: a crash never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(obj, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def save_checkpoint(path, model, **extra):
    """Model args, weights and any extra metadata (tokenizer, config, metrics), written atomically."""
    atomic_save({"model_args": asdict(model.config), "model": model.state_dict(), **extra}, path)


def load_checkpoint(path, device="cpu"):
    """-> (model, checkpoint dict). A missing file is a FileNotFoundError; a truncated or foreign one a
    ValueError whose message names the file (the scripts print either as one line)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling refused
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a checkpoint of this project (no model_args / model)")
    known = {f.name for f in fields(GPTConfig)}
    model = GPT(GPTConfig(**{k: v for k, v in ckpt["model_args"].items() if k in known}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # the first line only says "Error(s) in loading state_dict"
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise ValueError(f"{path}: weights do not fit the model args ({detail[:160]})")
    return model.to(device), ckpt


# GPT-2 stores these Linear layers as Conv1D, whose weight is (in, out); nn.Linear's is (out, in)
HF_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_hf_gpt2(hf_dir):
    """A local Hugging Face GPT-2 directory (config.json + model.safetensors or pytorch_model.bin)
    -> GPT. Nothing is downloaded."""
    cfg_path, st, pt = (os.path.join(hf_dir, f) for f in ("config.json", "model.safetensors", "pytorch_model.bin"))
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{hf_dir}: not a GPT-2 directory (no config.json)")
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if not isinstance(hf.get(k), int)]
    if missing:
        raise ValueError(f"{cfg_path}: not a GPT-2 config (no integer {', '.join(missing)})")
    if not (os.path.isfile(st) or os.path.isfile(pt)):
        raise ValueError(f"{hf_dir}: no model.safetensors or pytorch_model.bin")
    if os.path.isfile(st):
        try:  # here alone: the model itself needs torch only
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{st}: reading safetensors needs the package: pip install safetensors")
        sd = load_file(st)
    else:
        sd = torch.load(pt, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}  # GPT2LMHeadModel's prefix, or GPT2Model's none
    model = GPT(GPTConfig(block_size=hf.get("n_positions", 1024), vocab_size=hf["vocab_size"],
                          n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0))
    for key, param in model.state_dict().items():
        hf_key = key.removeprefix("transformer.")
        if key == "lm_head.weight":
            continue  # tied to wte
        if hf_key not in sd:
            raise ValueError(f"{hf_dir}: weight {hf_key} is missing")
        w = sd[hf_key].t() if hf_key.endswith(HF_CONV1D) else sd[hf_key]
        if w.shape != param.shape:
            raise ValueError(f"{hf_dir}: weight {hf_key} has shape {tuple(w.shape)}, expected {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(w)
    return model
