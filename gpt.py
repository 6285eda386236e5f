"""
gpt.py: the one model file every step shares.

A GPT-2 written out from the bottom up (attention, MLP, block, config, model), plus what RLHF
needs from a language model:
  - batched generation for rollouts: left-padded prompts, a preallocated KV cache, per-row EOS,
    temperature / top-k / top-p, the sampling log-probs and the response mask;
  - per-token log-probs of given sequences (SFT loss, RM, PPO ratios and the KL to SFT);
  - checkpoints (atomic writes) and loading a local Hugging Face GPT-2 directory.

InstructGPT (Ouyang et al. 2022, arXiv 2203.02155) starts every model from GPT-3 (Section 3.5);
here a tiny GPT of the same family stands in for it. The architecture is GPT-2's
(Radford et al. 2019): pre-LayerNorm blocks, GELU (tanh form), learned positions, weight tying.

Try it:  python gpt.py --help      (inspect a checkpoint or a GPT-2 directory)
         python bench.py           (cached against naive generation)

Where it departs from the paper / GPT-3:
  1. Dense attention everywhere (GPT-3 alternates dense and locally banded sparse layers).
  2. Sizes are tiny (a few million parameters instead of 1.3B / 6B / 175B).
"""

import argparse
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


class UserError(ValueError):
    """Bad input from the person running a script: printed as one line, exit code 2."""


def run_cli(main):
    """Run `main()`; turn a UserError (or a missing file) into one line on stderr and exit 2."""
    try:
        return main()
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


# -----------------------------------------------------------------------------
# The model, in the order of the diagram: attention, MLP, block, config, model.

class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, mask=None, kv=None, slots=None):
        """
        x (B, T, C). mask: None for plain causal attention, else a bool or additive (B, 1, T, S),
        True (0) where a query may look at a key. kv: None, or this layer's cache (k, v), each
        (B, nh, S_cache, hs); the T new keys and values are written into cache slots `slots` (T,)
        and the queries attend over the cache's first S slots, S from the mask (it hides empty
        and padded slots): a decode step need not read the cache's empty end.
        """
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)                   # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:
            k_cache, v_cache = kv
            k_cache.index_copy_(2, slots, k.to(k_cache.dtype))      # no host sync: slots is a tensor
            v_cache.index_copy_(2, slots, v.to(v_cache.dtype))
            S = mask.size(-1)
            k, v = k_cache[:, :, :S], v_cache[:, :, :S]              # (B, nh, S, hs)
        # softmax(q k^T / sqrt(hs) + mask) v, written by PyTorch as one fused kernel
        # (flash attention on GPUs when the mask is plain causal)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)             # (B, T, C): heads side by side
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
    vocab_size: int = 1024   # the BPE trained by data.py, special tokens included (GPT-2: 50257)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0     # InstructGPT's SFT used residual dropout 0.2 (Appendix C.1)
    bias: bool = True        # biases in Linear and LayerNorm, as GPT-2


@dataclass
class Generation:
    """What `GPT.generate` returns. N = number of generated steps (<= max_new_tokens)."""
    tokens: torch.Tensor         # (B, T+N) prompts (left-padded) followed by responses
    response_mask: torch.Tensor  # (B, N) 1 for real response tokens, up to and including EOS
    logprobs: torch.Tensor       # (B, N) log-prob of each sampled token (0 where masked)


@dataclass(frozen=True)
class Sampling:
    """How `GPT.generate` picks each new token (its arguments of the same names). Frozen, so it can
    key the CUDA graphs that record the picking (DecodeStep's whole_step)."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    eos_id: int | None = None
    pad_id: int = 0
    suppress: bool = False                  # Rollout.banned holds token ids never to sample
    generator: torch.Generator | None = None


class Rollout:
    """
    The growing batch of one `GPT.generate` call, kept on the device: prompts then responses in
    `tokens` (B, S); `valid` (B, S), True on the slots that hold real tokens (left padding does
    not); the sampling log-prob and the response mask of each new token; the rows that finished.

    `pick` is the bookkeeping of one new token: sample it from the logits, write it down, and
    leave it in `token` (B, 1) with its position `pos` (B, 1) and cache slot `slot` (1,), the
    decode step's next input. Which token it is comes from counters on the device that pick
    advances itself (`i`, `slot`, `pos`), never from the host, so the same call runs eagerly or
    recorded in a CUDA graph together with the decode step (DecodeStep's whole_step), leaving the
    host nothing to do between tokens.
    """

    def __init__(self, batch_size, length, vocab_size, device):
        B, S = batch_size, length
        self.tokens = torch.zeros(B, S, dtype=torch.long, device=device)
        self.valid = torch.zeros(B, S, dtype=torch.bool, device=device)
        self.logprobs = torch.zeros(B, S, device=device)                  # the first N columns used
        self.response_mask = torch.zeros(B, S, dtype=torch.bool, device=device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.banned = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.i = torch.zeros(1, dtype=torch.long, device=device)          # the next new token's index
        self.token = torch.zeros(B, 1, dtype=torch.long, device=device)   # the token just picked,
        self.pos = torch.zeros(B, 1, dtype=torch.long, device=device)     # its position in its row
        self.slot = torch.zeros(1, dtype=torch.long, device=device)       # and its slot
        self.sampling = Sampling()

    def start(self, idx, attention_mask, sampling, suppress_ids=None):
        """A new generation from prompts idx (B, T), left-padded, attention_mask (B, T) 1 on real tokens."""
        T = idx.size(1)
        self.tokens.fill_(sampling.pad_id)
        self.tokens[:, :T] = idx
        self.valid.zero_()
        self.valid[:, :T] = attention_mask.bool()
        for t in (self.logprobs, self.response_mask, self.finished, self.i, self.banned):
            t.zero_()
        if suppress_ids is not None:
            self.banned[torch.as_tensor(suppress_ids, dtype=torch.long, device=self.banned.device)] = True
        self.pos.copy_(self.valid.sum(1, keepdim=True) - 1)               # the last prompt token's
        self.slot.fill_(T - 1)
        self.sampling = sampling

    def pick(self, logits):
        """logits (B, V) for the next token -> sample it in every row, write it down (a column of
        tokens, logprobs and response_mask, a slot of valid), advance the counters."""
        s = self.sampling
        if s.suppress:
            logits = logits.masked_fill(self.banned, float("-inf"))
        token, logprob = sample(logits, s.temperature, s.top_k, s.top_p, s.generator)  # (B,), (B,)
        token = torch.where(self.finished, s.pad_id, token)              # a finished row emits padding
        logprob = torch.where(self.finished, 0.0, logprob)
        self.slot += 1
        self.pos += 1
        self.tokens.index_copy_(1, self.slot, token[:, None])            # index tensors: no host sync
        self.valid.index_fill_(1, self.slot, True)
        self.logprobs.index_copy_(1, self.i, logprob[:, None])
        self.response_mask.index_copy_(1, self.i, ~self.finished[:, None])
        self.token.copy_(token[:, None])
        if s.eos_id is not None:
            self.finished |= token == s.eos_id
        self.i += 1

    def save(self):
        """Everything pick changes, its tensors and the state of the random generator it draws from
        (DecodeStep.warm_up runs trial steps, then puts it all back with `restore`)."""
        return [t.clone() for t in self._changed()], self._generator().get_state()

    def restore(self, saved):
        tensors, rng = saved
        for t, s in zip(self._changed(), tensors):
            t.copy_(s)
        self._generator().set_state(rng)

    def _changed(self):
        return (self.tokens, self.valid, self.logprobs, self.response_mask, self.finished, self.i,
                self.token, self.pos, self.slot)

    def _generator(self):
        """The generator pick draws from: the Sampling's, else the device's default one."""
        device = self.tokens.device
        if self.sampling.generator is not None:
            return self.sampling.generator
        return torch.cuda.default_generators[device.index] if device.type == "cuda" else torch.default_generator


class KVCache:
    """Keys and values of every layer for a whole generation, allocated once: no reallocation
    per token, so shapes stay static (what CUDA graphs and torch.compile need). One tensor per
    layer, (B, nh, S, hs) each: torch.compile writes a new key into such a tensor in place, but
    into a slice of one stacked tensor, or into a view of its first slots, by copying the whole
    slice (tried on the CPU: docs/gpu-notes.md), another pass over the cache at every token."""

    def __init__(self, config, batch_size, length, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, length, hs)              # (B, nh, S, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]

    def layer(self, i):
        return self.k[i], self.v[i]


DECODE_BUCKET = 32  # a decode step attends over the cache's first multiple of this many slots


def decode_logits(model, token, pos, mask, cache, slot, head=None):
    """A decode step's forward pass (DecodeStep): the new tokens (B, 1) -> next-token logits
    (B, V). head: the output layer's weights padded to more rows, or None for lm_head's own."""
    h = model.hidden_states(token, pos, mask, cache, slot)[:, -1]    # (B, C)
    if head is None:
        return model.lm_head(h)
    return F.linear(h, head)[:, :model.config.vocab_size]            # (B, V), a view


@functools.cache
def compiled_decode_logits():
    """decode_logits compiled by torch.compile, made once per process so that every generation
    shares its compiled code: a new DecodeStep's buffers of the same shapes compile nothing new.
    The first attended length compiles for that length, the second once more with the length
    left symbolic; on a CPU inductor needs a C++ compiler."""
    return torch.compile(decode_logits, fullgraph=True)


class DecodeStep:
    """
    One decode step of `GPT.generate`: the forward pass of the token each row just picked
    (Rollout.token (B, 1) at Rollout.pos, its key and value written into cache slot Rollout.slot),
    attending over the real slots of the cache -> next-token logits (B, V); then Rollout.pick
    samples the next token. The step owns the generation's buffers: the KV cache of
    S = prompt + new tokens slots and the Rollout.

    Attention reads the first multiple of `bucket` slots that holds every token so far, not the
    whole cache: with a 64-token prompt and 128 new tokens, 96 to 192 slots instead of always 192,
    a quarter fewer key/value bytes per step on average (the mask hides the empty slots). On an
    H100 that saved only 5% at batch 256: cuDNN's attention for one query per row costs nearly
    as much at 96 slots as at 192 (docs/gpu-notes.md).

    With cuda_graph=True each such length's forward pass is recorded once as a CUDA graph, the
    first time it is needed, and replayed at every token: one launch for the whole forward pass
    instead of about ten kernel launches per layer, the launch overhead that bounds small-batch
    decoding on a GPU. A graph replays fixed memory addresses, so the step reads its inputs from
    fixed buffers (the Rollout's, which pick updates in place), the mask is a view of
    Rollout.valid, and the logits come back in a fixed tensor that the next replay overwrites.
    whole_step=True records pick in the same graph (sampling, the writes, the EOS check): a token
    then costs one replay and nothing else from the host (the replay itself launches a few tiny
    kernels that hand the random generators their seed and offset). The sampling settings are
    recorded with it, so a call with other settings (another Sampling, a new generator included)
    records the graphs anew; the random generator is registered with each graph, which draws
    fresh noise from it at every replay, moving it on as the eager draws would. Without a graph
    (CPU, tests) the same buffers are used and the same calls simply run at each step.

    compile=True runs the forward pass compiled by torch.compile (compiled_decode_logits), with
    or without graphs: inductor fuses each LayerNorm with the residual add before it and the
    GELU with its bias, so fewer kernels per layer. Compiling takes tens of seconds on the first
    call of each shape (17 s for a 3.7M model on two CPU cores); tests hold the compiled step
    equal to the plain one.
    """

    def __init__(self, model, batch_size, length, cuda_graph=False, bucket=DECODE_BUCKET, compile=False,
                 whole_step=False):
        weight = model.transformer.wte.weight
        if cuda_graph and not weight.is_cuda:
            raise UserError("cuda_graph=True needs the model on a CUDA device")
        if whole_step and not cuda_graph:
            raise UserError("whole_step records the whole decode step in a CUDA graph: it needs cuda_graph=True")
        self.model, self.bucket, self.cuda_graph, self.whole_step = model, bucket, cuda_graph, whole_step
        self.logits_fn = compiled_decode_logits() if compile else decode_logits
        self.cache = KVCache(model.config, batch_size, length, weight.device, weight.dtype)
        self.rollout = Rollout(batch_size, length, model.config.vocab_size, weight.device)
        self.graphs = {}  # attended length -> (CUDA graph, the logits it writes, or None with whole_step)
        self.graphs_sampling = None  # with whole_step: the Sampling recorded in them
        # The output layer's weights with rows padded to a multiple of 64 where the vocabulary is
        # not one (GPT-2's 50257): for an odd row count cuBLAS falls back to a slow kernel, 214 us
        # of a 1.5 ms decode step at batch 256 on an H100 (profile_decode.py). A copy, so `refresh`
        # brings it up to date before each generation; in autocast's dtype under autocast.
        V, C = weight.shape
        self.head = None
        if V % 64:
            dtype = weight.dtype
            if torch.is_autocast_enabled(weight.device.type):
                dtype = torch.get_autocast_dtype(weight.device.type)
            self.head = torch.zeros(-(-V // 64) * 64, C, dtype=dtype, device=weight.device)

    def refresh(self):
        """Copy the output layer's current weights into the padded copy (training may have changed them)."""
        if self.head is not None:
            self.head[:self.model.config.vocab_size].copy_(self.model.lm_head.weight)

    def attended(self, n):
        """How many slots a step attends over when the first n hold the tokens so far."""
        return min(self.rollout.valid.size(1), -(-n // self.bucket) * self.bucket)

    def forward(self, length):
        """The logits (B, V) of the tokens just picked, attending over the cache's first `length` slots."""
        r = self.rollout
        return self.logits_fn(self.model, r.token, r.pos, r.valid[:, None, None, :length], self.cache, r.slot,
                              self.head)

    def step(self, length):
        """The forward pass, then the next token picked: what whole_step records."""
        self.rollout.pick(self.forward(length))

    def warm_up(self, run):
        """Run `run` twice before recording it (lazy initialisation, cuBLAS workspaces, kernel
        selection), putting the Rollout and the random generator back after each run. The key and
        value it writes into the current slot are those the real step writes there again."""
        saved = self.rollout.save()
        for _ in range(2):
            run()
            self.rollout.restore(saved)

    def capture(self, length):
        # Under the caller's autocast, the graph reads the bf16 copies of the weights that autocast
        # cached during the prefill; they live until that autocast block ends, so such a step
        # serves one generate call (GPT.decoder) and no replay recasts the weights.
        run = (lambda: self.step(length)) if self.whole_step else (lambda: self.forward(length))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.warm_up(run)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        generator = self.rollout.sampling.generator
        if self.whole_step and generator is not None:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            logits = run()
        return graph, logits

    def advance(self, n):
        """Decode the tokens just picked (n: slots in use, theirs included) and pick the next ones."""
        length = self.attended(n)
        if not self.cuda_graph:
            return self.step(length)
        if self.whole_step and self.rollout.sampling != self.graphs_sampling:  # recorded with other settings
            self.graphs, self.graphs_sampling = {}, self.rollout.sampling
        if length not in self.graphs:
            self.graphs[length] = self.capture(length)
        graph, logits = self.graphs[length]
        graph.replay()
        if not self.whole_step:
            self.rollout.pick(logits)


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
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @staticmethod
    def from_pretrained(hf_dir):
        """A local Hugging Face GPT-2 directory -> GPT with the same logits (see load_hf_gpt2)."""
        return load_hf_gpt2(hf_dir)

    def set_dropout(self, p):
        """Change the dropout of a built model (SFT adds dropout to a model pretrained without)."""
        self.config.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, CausalSelfAttention):
                m.dropout = p

    def num_params(self):
        """Parameters, counting the tied embedding once and leaving out position embeddings."""
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    # -- the forward pass --------------------------------------------------------------

    def hidden_states(self, idx, pos=None, mask=None, cache=None, slots=None):
        """Token ids (B, T) -> final hidden states (B, T, C) after the last LayerNorm.
        pos: position ids, (T,) or (B, T); mask / cache / slots: see CausalSelfAttention."""
        T = idx.size(1)
        if pos is None:
            if T > self.config.block_size:
                raise UserError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        if mask is not None and mask.dtype == torch.bool:  # to 0 / -inf once, not in every layer's attention
            dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, None if cache is None else cache.layer(i), slots)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, attention_mask=None):
        """
        idx (B, T) token ids; targets (B, T) next-token ids with -1 where no loss is wanted;
        attention_mask (B, T) 1 for real tokens, 0 for (left or right) padding.
        Returns logits (B, T, V) and the mean cross-entropy over positions with a target (or None).
        """
        pos, mask = None, None
        if attention_mask is not None:
            pos, mask = padded_positions(attention_mask, self.config.block_size)
        logits = self.lm_head(self.hidden_states(idx, pos, mask))    # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    # -- generation ----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, attention_mask=None, temperature=1.0, top_k=None,
                 top_p=None, eos_id=None, use_cache=True, pad_id=0, generator=None, suppress_ids=None,
                 cuda_graph=False, compile_step=False, whole_step=False):
        """
        Sample continuations of a batch of left-padded prompts, as RLHF rollouts need.

        idx (B, T) prompts, padded on the left; attention_mask (B, T) 1 on real tokens.
        temperature 0 is greedy. A row stops after it samples eos_id; from then on it emits
        pad_id, masked out of `response_mask`. The loop runs until every row has stopped or
        max_new_tokens steps, checking that only every `check_every` steps on CUDA (a check
        is a host-device sync). use_cache=False recomputes the whole sequence at each step:
        the slow reference the cache is tested against. suppress_ids: token ids never sampled
        (padding and the chat format's role tokens have no place inside a response).
        cuda_graph: replay the decode step's forward pass as a CUDA graph (see DecodeStep; CUDA
        only); whole_step: record the sampling and its bookkeeping in the same graph.
        compile_step: run the decode step compiled by torch.compile (DecodeStep's compile).

        Returns Generation(tokens (B, T+N), response_mask (B, N), logprobs (B, N)). The
        log-probs are those of the distribution sampled from (after temperature, top-k,
        top-p); with temperature 0 they are the model's own (temperature 1) log-probs.
        """
        B, T = idx.shape
        N = max_new_tokens
        if N <= 0:
            raise UserError(f"max_new_tokens must be positive, got {N}")
        if (cuda_graph or compile_step or whole_step) and not use_cache:
            raise UserError("cuda_graph / compile_step / whole_step work on the cached decode step: "
                            "they need use_cache=True")
        if T + N > self.config.block_size:
            raise UserError(f"prompt of {T} tokens + max_new_tokens {N} exceeds block_size "
                            f"{self.config.block_size}")
        was_training = self.training
        self.eval()
        device = idx.device
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        if use_cache:
            decode = self.decoder(B, T + N, cuda_graph, compile_step, whole_step)  # owns the KV cache and rollout
            rollout = decode.rollout
        else:
            rollout = Rollout(B, T + N, self.config.vocab_size, device)
        sampling = Sampling(temperature, top_k, top_p, eos_id, pad_id, suppress_ids is not None,
                            generator if temperature > 0 else None)  # greedy draws nothing: graphs kept for any
        rollout.start(idx, attention_mask, sampling, suppress_ids)
        check_every = 16 if device.type == "cuda" else 1

        if use_cache:  # prefill: the whole prompt in one pass, keys and values into slots 0..T-1
            pos, _ = padded_positions(attention_mask, self.config.block_size)
            slots = torch.arange(T, device=device)
            mask = causal_mask(rollout.valid, slots)                 # (B, 1, T, T+N)
            logits = self.lm_head(self.hidden_states(idx, pos, mask, decode.cache, slots)[:, -1])  # (B, V)
        else:
            logits = self(idx, attention_mask=attention_mask)[0][:, -1]
        rollout.pick(logits)                                         # the first new token of every row

        for i in range(1, N):                                        # the others, one per step
            if i % check_every == 0 and bool(rollout.finished.all()):
                N = i
                break
            if use_cache:  # decode: the tokens just picked, attending over the cache; pick the next
                decode.advance(T + i)
            else:  # the naive path: recompute everything seen so far
                valid = rollout.valid[:, :T + i]
                rollout.pick(self(rollout.tokens[:, :T + i], attention_mask=valid)[0][:, -1])

        self.train(was_training)
        return Generation(rollout.tokens[:, :T + N].clone(), rollout.response_mask[:, :N].long(),
                          rollout.logprobs[:, :N].clone())

    def decoder(self, batch_size, length, cuda_graph=False, compile=False, whole_step=False):
        """The DecodeStep of a generation of this shape. A CUDA-graph step made outside autocast is
        kept and serves the next call of the same shape too, so its graphs are recorded once (they
        read the weights in place: training between calls is fine). Under autocast its graphs read
        autocast's bf16 copies of the weights, freed when autocast ends, so such a step serves one
        call, and attends over the whole cache to record one graph instead of one per length.
        compile: the step's forward pass compiled (DecodeStep); under autocast the compiled code
        casts the weights to bf16 at every step, where eager autocast casts them once per call.
        whole_step: the sampling recorded in the graphs too (DecodeStep)."""
        weight = self.transformer.wte.weight
        if not cuda_graph:
            step = DecodeStep(self, batch_size, length, compile=compile, whole_step=whole_step)
        elif torch.is_autocast_enabled(weight.device.type):
            step = DecodeStep(self, batch_size, length, cuda_graph, bucket=length, compile=compile,
                              whole_step=whole_step)
        else:
            key = (batch_size, length, weight.dtype, weight.data_ptr(), compile, whole_step)
            kept = getattr(self, "_kept_decoder", None)
            if kept is None or kept[0] != key:
                kept = self._kept_decoder = (key, DecodeStep(self, batch_size, length, cuda_graph, compile=compile,
                                                             whole_step=whole_step))
            step = kept[1]
        step.refresh()
        return step


def padded_positions(attention_mask, block_size):
    """Position ids and the attention mask for a padded batch.
    attention_mask (B, T) 1 on real tokens -> pos (B, T) counting real tokens only (so a
    left-padded prompt starts at position 0), mask (B, 1, T, T) bool."""
    valid = attention_mask.bool()
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)                  # (B, T)
    if valid.size(1) > block_size:
        raise UserError(f"sequence of {valid.size(1)} tokens is longer than block_size {block_size}")
    return pos, causal_mask(valid, torch.arange(valid.size(1), device=valid.device))


def causal_mask(valid, slots):
    """valid (B, S) real-token slots; slots (T,) where the T queries sit -> (B, 1, T, S) bool.
    A query sees real keys at or before its own slot, and always itself (so a padding
    position has something to attend to and its softmax stays finite; its output is unused)."""
    key = torch.arange(valid.size(1), device=valid.device)           # (S,)
    before = key[None, :] <= slots[:, None]                          # (T, S)
    itself = key[None, :] == slots[:, None]                          # (T, S)
    return ((valid[:, None, :] & before) | itself).unsqueeze(1)      # (B, 1, T, S)


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, V) -> next tokens (B,) and their log-probs (B,) under the distribution sampled
    from. Sampling uses the exponential race (argmax of p / Exp(1) noise is a draw from p), which
    needs no host-device sync, unlike rejection checks inside torch.multinomial."""
    if temperature == 0:  # log p(token) = logit - logsumexp(logits): two passes over (B, V), not four
        token = logits.argmax(-1)
        return token, logits.gather(1, token[:, None]).squeeze(1).float() - torch.logsumexp(logits.float(), -1)
    logits = logits.float()
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:  # nucleus: the smallest set of tokens whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p                     # mass before this token already enough
        drop[:, 0] = False                                           # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    logp = F.log_softmax(logits, dim=-1)
    noise = torch.empty_like(logp).exponential_(1, generator=generator)
    token = (logp.exp() / noise).argmax(-1)
    return token, logp.gather(1, token[:, None]).squeeze(1)


def token_logprobs(model, tokens, attention_mask, with_entropy=False):
    """Per-token log-probs of sequences the model did not necessarily sample.
    tokens (B, T), attention_mask (B, T) -> logprobs (B, T-1): log p(tokens[:, t+1] | tokens[:, :t+1]),
    0 where the predicted token is padding. SFT, the KL to SFT and PPO's ratios all read these,
    always together with one explicit response mask. with_entropy: also the entropy (B, T-1)
    of each predicted distribution (PPO logs it)."""
    logits, _ = model(tokens, attention_mask=attention_mask)        # (B, T, V)
    logp_all = F.log_softmax(logits[:, :-1].float(), dim=-1)        # (B, T-1, V)
    logp = logp_all.gather(2, tokens[:, 1:, None]).squeeze(2) * attention_mask[:, 1:]  # (B, T-1)
    if not with_entropy:
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1) * attention_mask[:, 1:]
    return logp, entropy


# -----------------------------------------------------------------------------
# Checkpoints, and loading a local Hugging Face GPT-2 directory

def save_checkpoint(path, model, **extra):
    """Write model args, weights and any extra metadata (tokenizer, config, metrics) to `path`.
    Atomic: a temporary file is written first and renamed, so a crash never leaves half a file."""
    atomic_save({"model_args": asdict(model.config), "model": model.state_dict(), **extra}, path)


def atomic_save(obj, path):
    """torch.save to a temporary file, then rename it over `path`: a crash never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """-> (model, checkpoint dict). A missing, truncated or foreign file is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling refused
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path}: not a checkpoint of this project (no model_args / model)")
    known = {f.name for f in fields(GPTConfig)}
    model = GPT(GPTConfig(**{k: v for k, v in ckpt["model_args"].items() if k in known}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # the first line only says "Error(s) in loading state_dict"
        detail = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise UserError(f"{path}: weights do not fit the model args ({detail[:160]})")
    return model.to(device), ckpt


# -----------------------------------------------------------------------------
# Interrupted runs: Ctrl-C saves a resumable state, --resume continues it exactly (issue 9)

class stop_on_signal:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM only sets `requested`: the loop checks it
    between steps, saves and leaves, so a run is never stopped halfway through an optimizer step.
    A second Ctrl-C stops at once (nothing saved)."""

    def __enter__(self):
        self.requested = False
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping after this step to save a resumable state (Ctrl-C again: stop now, save nothing)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


class Resume:
    """OUT_DIR/<name>.resume.pt: everything a training loop needs to continue exactly where it
    stopped (weights, optimizer, random states, step, the data it drew). Written atomically at
    safe points and on Ctrl-C; read by --resume; removed when the stage finishes. It also records
    how many metrics.jsonl lines the stage had logged, so that those logged after the save are
    dropped on resume, and the seconds spent so far, so that a resumed stage reports the time of
    both runs."""

    IGNORED = ("resume", "quiet", "device")  # flags that may change between the two runs

    def __init__(self, out_dir, name, cfg, log, t_start=None):
        self.path = os.path.join(out_dir, f"{name}.resume.pt")
        self.name, self.config, self.log = name, asdict(cfg), log
        self.t_start = time.time() if t_start is None else t_start
        self.seconds_before = 0.0  # spent by the interrupted run, up to its save

    def seconds(self):
        """Seconds this stage has taken: since t_start, plus the interrupted run's up to its save."""
        return round(self.seconds_before + time.time() - self.t_start, 1)

    def save(self, **state):
        state.update(config=self.config, metrics_lines=len(self.log.lines()[0]), torch_rng=torch.get_rng_state(),
                     seconds=self.seconds())
        if torch.cuda.is_available():  # dropout on a GPU draws from the GPU's generators
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_save(state, self.path)

    def load(self, device):
        """-> the saved dict; a one-line error when the file is missing, unreadable or from a run
        with other flags. This stage's metrics.jsonl lines written after the save are dropped."""
        if not os.path.isfile(self.path):
            raise UserError(f"--resume: {self.path} does not exist (nothing to resume)")
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as e:
            raise UserError(f"--resume: {self.path} is not readable ({type(e).__name__})")
        for key, value in state["config"].items():
            if key not in self.IGNORED and self.config.get(key) != value:
                flag = "--" + key.replace("_", "-")
                raise UserError(f"--resume: {flag} is {self.config.get(key)!r} here but {value!r} in the "
                                f"interrupted run; resume with the same flags")
        self.seconds_before = float(state.get("seconds", 0.0))
        # the lines this stage had logged by the save; counted in lines, not bytes: another stage
        # run in between may have rewritten the file (MetricsLog)
        if "metrics_lines" in state:
            self.log.keep_own_lines(state["metrics_lines"])
        return state

    def restore_rng(self, state):
        """Put back the random generators as they were at the save. Call it last, just before the
        loop: building models draws from the same generators."""
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda_rng"]])

    def interrupted(self, where, **state):
        """Save and leave (the KeyboardInterrupt reaches run_cli: exit code 130)."""
        self.save(**state)
        print(f"{self.name}: interrupted at {where}; saved {self.path}; continue with --resume", flush=True)
        raise KeyboardInterrupt

    def done(self):
        if os.path.exists(self.path):
            os.remove(self.path)


# GPT-2 stores these Linear layers as Conv1D, whose weight is (in, out); nn.Linear's is (out, in)
HF_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_hf_gpt2(hf_dir):
    """Read a local Hugging Face GPT-2 directory (config.json + model.safetensors or
    pytorch_model.bin) into a GPT. Nothing is downloaded."""
    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise UserError(f"{hf_dir}: not a GPT-2 directory (no config.json)")
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path}: not valid JSON ({e})")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if not isinstance(hf.get(k), int)]
    if missing:
        raise UserError(f"{cfg_path}: not a GPT-2 config (no integer {', '.join(missing)})")
    config = GPTConfig(block_size=hf.get("n_positions", 1024), vocab_size=hf["vocab_size"],
                       n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0)
    st, pt = os.path.join(hf_dir, "model.safetensors"), os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.isfile(st):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{st}: reading safetensors needs the package: pip install safetensors")
        sd = load_file(st)
    elif os.path.isfile(pt):
        sd = torch.load(pt, map_location="cpu", weights_only=True)
    else:
        raise UserError(f"{hf_dir}: no model.safetensors or pytorch_model.bin")
    # Keys may carry "transformer." (GPT2LMHeadModel) or not (GPT2Model); Conv1D weights are transposed.
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    model = GPT(config)
    ours = model.state_dict()
    for key, param in ours.items():
        if key == "lm_head.weight":
            continue  # tied to wte
        hf_key = key.removeprefix("transformer.")
        if hf_key not in sd:
            raise UserError(f"{hf_dir}: weight {hf_key} is missing")
        w = sd[hf_key].t() if hf_key.endswith(HF_CONV1D) else sd[hf_key]
        if w.shape != param.shape:
            raise UserError(f"{hf_dir}: weight {hf_key} has shape {tuple(w.shape)}, expected {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(w)
    return model


def hf_state_dict(model):
    """Our weights under Hugging Face GPT-2 names and layout (the inverse of from_pretrained),
    so transformers can run the very same model (bench.py, tests)."""
    sd = {}
    for key, w in model.state_dict().items():
        if key != "lm_head.weight":  # tied to wte
            sd[key] = (w.t() if key.endswith(HF_CONV1D) else w).contiguous().clone()
    return sd


def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu"):
    """AdamW with weight decay on matrices only (not on biases or LayerNorm gains), fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


def flops_per_token(config, seq_len):
    """Training FLOPs per token: 6N for the matmuls forward and backward, plus attention
    (PaLM appendix B: 12 * n_layer * n_embd * seq_len)."""
    c = config
    n = 12 * c.n_layer * c.n_embd ** 2 + c.vocab_size * c.n_embd
    return 6 * n + 12 * c.n_layer * c.n_embd * seq_len


# dense bfloat16 FLOP/s and memory bandwidth (bytes/s) of GPUs, from their data sheets;
# the first name found in torch.cuda.get_device_name() wins, so variants come before their family
GPU_PEAKS = [("H100 PCIe", 756e12, 2.0e12), ("H100 NVL", 835e12, 3.9e12), ("H100", 989e12, 3.35e12),
             ("H200", 989e12, 4.8e12), ("A100-SXM4-40GB", 312e12, 1.555e12), ("A100", 312e12, 2.039e12),
             ("L40S", 362e12, 0.864e12), ("L4", 121e12, 0.3e12), ("4090", 165e12, 1.008e12)]


@functools.lru_cache(maxsize=None)
def gpu_peaks(device=None):
    """-> (peak dense bf16 FLOP/s, peak memory bytes/s) of a CUDA device, for MFU and the
    bandwidth bound of decoding; an unknown GPU counts as an A100 (and says so)."""
    name = torch.cuda.get_device_name(device)
    for key, flops, bandwidth in GPU_PEAKS:
        if key in name:
            return flops, bandwidth
    print(f"note: {name} is not in gpt.GPU_PEAKS; MFU and bounds assume an A100's peaks", file=sys.stderr)
    return 312e12, 2.039e12


# -----------------------------------------------------------------------------
# What the training scripts share: flags from a config dataclass, the device, the lr schedule,
# the one-line log, and growing the vocabulary for new special tokens.

def arg(default, help):
    """A config field with its --help text: `lr: float = arg(1e-4, "peak learning rate")`."""
    return field(default=default, metadata={"help": help})


def parse_config(cls, argv=None, presets=None, description=None):
    """Turn a config dataclass into argparse flags (one per field, with its help text) and parse.
    With `presets` ({name: {field: value}}) the config needs a `preset` field: the preset's values
    replace the defaults and flags given on the command line replace both."""
    epilog = None
    if presets:
        epilog = "presets (each replaces the defaults above; flags given replace both):\n" + "\n".join(
            f"  {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()) for name, values in presets.items())
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{text} (default: {f.default})")
        else:
            parser.add_argument(flag, type=str if f.default is None else kind, default=None,
                                choices=list(presets) if (presets and f.name == "preset") else None,
                                help=f"{text} (default: {f.default})")
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset = given.get("preset", getattr(cls, "preset", None))
    values = {**(presets or {}).get(preset, {}), **given}
    return cls(**values)


def setup(device="auto", seed=0):
    """Seed everything, pick the device, and return it with the autocast context to train in:
    bfloat16 on CUDA (with TF32 matmuls), plain float32 on CPU."""
    import contextlib
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device here")
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return device, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    torch.set_flush_denormal(True)  # denormal floats made backward matmuls ~40x slower on CPU
    return device, contextlib.nullcontext


def ensure_out_dir(path, flag="--out-dir"):
    """Create the run folder and prove it takes files: a bad folder fails now, not after an hour."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{flag} {path}: not writable ({e.strerror})")


def check_positive(cfg, names):
    """One line naming the flag when a size or rate that must be positive is not."""
    for name in names:
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")


def cosine_lr(step, max_steps, lr, warmup=0, min_ratio=0.1):
    """Linear warmup, then cosine decay to min_ratio * lr (InstructGPT's SFT: cosine decay)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class MetricsLog:
    """One line per logged step, fields separated by |, and the same fields appended as one JSON
    object to metrics.jsonl (all stages share the file; `stage` tells them apart). A stage run
    again from the start (not resumed) replaces its earlier lines when it logs its first, so the
    plots drawn from the file show one run per stage."""

    def __init__(self, out_dir, stage, quiet=False, resume=False):
        self.path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
        self.stage, self.quiet = stage, quiet
        self.replaces = not resume  # a resumed stage keeps its lines (Resume.load trims them)

    def log(self, step, **metrics):
        row = {"stage": self.stage, "step": step, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                      for k, v in metrics.items()}}
        if self.path:
            if self.replaces:
                self.keep_own_lines(0)
            self.replaces = False
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if not self.quiet:
            parts = [f"{self.stage} step {step}"] + [f"{k} {_fmt(v)}" for k, v in metrics.items()]
            print(" | ".join(parts), flush=True)

    def lines(self):
        """metrics.jsonl's lines -> (this stage's, the other stages')."""
        if not (self.path and os.path.exists(self.path)):
            return [], []
        own, others = [], []
        with open(self.path) as f:
            for line in f:
                if line.strip():
                    (own if json.loads(line).get("stage") == self.stage else others).append(line)
        return own, others

    def keep_own_lines(self, n):
        """Drop this stage's lines after its first n (the other stages' stay); written to a new file
        that replaces the old one, so Ctrl-C cannot leave half a file."""
        own, others = self.lines()
        if len(own) > n:
            with open(self.path + ".tmp", "w") as f:
                f.writelines(others + own[:n])
            os.replace(self.path + ".tmp", self.path)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


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


def load_any(path, device="cpu"):
    """A checkpoint file of this project or a Hugging Face GPT-2 directory -> (model, metadata)."""
    if os.path.isdir(path):
        return GPT.from_pretrained(path).to(device), {}
    return load_checkpoint(path, device)


def main():
    parser = argparse.ArgumentParser(description="Inspect a checkpoint of this project or a local "
                                     "Hugging Face GPT-2 directory: its config, size and metadata.")
    parser.add_argument("path", help="a .pt checkpoint (out/<run>/sft.pt, ...) or a GPT-2 directory")
    args = parser.parse_args()
    model, ckpt = load_any(args.path)
    print(f"{args.path}: {model.num_params() / 1e6:.2f}M parameters")
    for k, v in asdict(model.config).items():
        print(f"  {k:12s} {v}")
    extra = [k for k in ckpt if k not in ("model", "model_args")]
    if extra:
        print("  metadata:", ", ".join(extra))


if __name__ == "__main__":
    run_cli(main)
