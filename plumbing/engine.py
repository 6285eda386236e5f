"""
engine.py: the fast rollout engine. The same computation as `gpt.GPT.generate` (read that one
first), arranged so that a GPU spends its time on arithmetic rather than waiting on the host:

  - every buffer is allocated once per generation and updated in place (the Rollout: tokens,
    valid slots, log-probs, response mask, finished rows; and the KV cache), so shapes stay
    static, as CUDA graphs and torch.compile need;
  - the bookkeeping of a new token (`Rollout.pick`) reads which token it is from counters on the
    device, never from the host, so the loop has no host-device sync per token; whether every
    row has finished is checked every 16 steps on CUDA only;
  - a decode step attends over the first multiple of DECODE_BUCKET slots that holds the tokens
    so far, not the whole cache;
  - on a CPU, an eager decode (not compiled) drops the rows that have finished every
    SHRINK_EVERY steps (`DecodeStep.keep`), drawing the same random numbers as before;
  - optionally (`DecodeStep`): the forward pass, or the whole step with the sampling, recorded as
    one CUDA graph per attended length (`cuda_graph`, `whole_step`); the forward pass compiled by
    torch.compile (`compile_step`); the output layer padded to a multiple of 64 rows for cuBLAS.

`generate(model, ...)` returns the same `gpt.Generation` as `model.generate(...)`;
tests/test_engine.py holds the two equal token for token (greedy, and sampled from one
generator), and the graph paths equal to the eager one on CUDA. PPO's rollouts and every
`checkpoint.respond` (the reward model's samples, the evaluation) run here. docs/gpu.md has the
measurements behind each choice.
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt import Generation, KVCache, causal_mask, padded_positions, sample
from plumbing.cli import UserError


@dataclass(frozen=True)
class Sampling:
    """How `generate` picks each new token (its arguments of the same names). Frozen, so it can
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
    The growing batch of one `generate` call, kept on the device: prompts then responses in
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
        self.rows, self.batch_size = None, B  # after `keep`: which rows of the batch these are

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
            self.banned[torch.as_tensor(list(suppress_ids), dtype=torch.long, device=self.banned.device)] = True
        self.pos.copy_(self.valid.sum(1, keepdim=True) - 1)               # the last prompt token's
        self.slot.fill_(T - 1)
        self.sampling = sampling

    def pick(self, logits):
        """logits (B, V) for the next token -> sample it in every row, write it down (a column of
        tokens, logprobs and response_mask, a slot of valid), advance the counters."""
        s = self.sampling
        if s.suppress:
            logits = logits.masked_fill(self.banned, float("-inf"))
        draws = None
        if self.rows is not None and s.temperature > 0:  # the whole batch's uniforms, as gpt.py draws them
            draws = torch.rand(self.batch_size, 1, device=logits.device, generator=s.generator)[self.rows]
        token, logprob = sample(logits, s.temperature, s.top_k, s.top_p, s.generator, draws)  # (B,), (B,)
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

    def keep(self, rows):
        """Go on with the rows `rows` (indices into this rollout's rows) alone."""
        for name in ("tokens", "valid", "logprobs", "response_mask", "finished", "token", "pos"):
            setattr(self, name, getattr(self, name)[rows])
        self.rows = rows if self.rows is None else self.rows[rows]

    def write_into(self, out):
        """Write this rollout's tokens, response mask and log-probs into the whole batch's `out` (a
        list of three (batch_size, S) tensors; None: copies of this rollout's own, before any `keep`)."""
        mine = (self.tokens, self.response_mask, self.logprobs)
        if out is None:
            return [t.clone() for t in mine]
        for whole, t in zip(out, mine):
            whole[self.rows] = t
        return out

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


DECODE_BUCKET = 32  # a decode step attends over the cache's first multiple of this many slots
# every SHRINK_EVERY steps an eager decode on a CPU drops its finished rows if they are more than a
# quarter of the batch: sampled answers stop at EOS at very different lengths, and a batch otherwise
# computes every row until its longest answer ends (docs/gpu.md measures how many row-steps that was)
SHRINK_EVERY, SHRINK_BELOW = 8, 0.75


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
    One decode step of `generate`: the forward pass of the token each row just picked
    (Rollout.token (B, 1) at Rollout.pos, its key and value written into cache slot Rollout.slot),
    attending over the real slots of the cache -> next-token logits (B, V); then Rollout.pick
    samples the next token. The step owns the generation's buffers: the KV cache of
    S = prompt + new tokens slots and the Rollout.

    Attention reads the first multiple of `bucket` slots that holds every token so far, not the
    whole cache: with a 64-token prompt and 128 new tokens, 96 to 192 slots instead of always 192,
    a quarter fewer key/value bytes per step on average (the mask hides the empty slots).

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
    GELU with its bias, so fewer kernels per layer. Compiling takes seconds to minutes on the
    first call of each shape; tests hold the compiled step equal to the plain one.

    The cache is one tensor per layer because torch.compile writes a new key into such a tensor
    in place, but into a slice of one stacked tensor by copying the whole slice.
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
        # not one (GPT-2's 50257): for an odd row count cuBLAS falls back to a slow kernel. A copy,
        # so `refresh` brings it up to date before each generation; in autocast's dtype under autocast.
        V, C = weight.shape
        self.head = None
        if V % 64:
            dtype = weight.dtype
            if torch.is_autocast_enabled(weight.device.type):
                dtype = torch.get_autocast_dtype(weight.device.type)
            self.head = torch.zeros(-(-V // 64) * 64, C, dtype=dtype, device=weight.device)

    def keep(self, rows):
        """Drop every row but `rows` from the KV cache and the rollout: a finished row would
        otherwise cost a full row of arithmetic at every later step (eager steps only: graphs and
        compiled code are made for one batch size)."""
        self.cache.k = [k[rows] for k in self.cache.k]
        self.cache.v = [v[rows] for v in self.cache.v]
        self.rollout.keep(rows)

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
        # serves one generate call (`decoder`) and no replay recasts the weights.
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


def decoder(model, batch_size, length, cuda_graph=False, compile=False, whole_step=False):
    """The DecodeStep of a generation of this shape. A CUDA-graph step made outside autocast is
    kept on the model and serves the next call of the same shape too, so its graphs are recorded
    once (they read the weights in place: training between calls is fine). Under autocast its
    graphs read autocast's bf16 copies of the weights, freed when autocast ends, so such a step
    serves one call, and attends over the whole cache to record one graph instead of one per
    length. compile: the step's forward pass compiled (DecodeStep); under autocast the compiled
    code casts the weights to bf16 at every step, where eager autocast casts them once per call.
    whole_step: the sampling recorded in the graphs too (DecodeStep)."""
    weight = model.transformer.wte.weight
    if not cuda_graph:
        step = DecodeStep(model, batch_size, length, compile=compile, whole_step=whole_step)
    elif torch.is_autocast_enabled(weight.device.type):
        step = DecodeStep(model, batch_size, length, cuda_graph, bucket=length, compile=compile,
                          whole_step=whole_step)
    else:
        key = (batch_size, length, weight.dtype, weight.data_ptr(), compile, whole_step)
        kept = getattr(model, "_kept_decoder", None)
        if kept is None or kept[0] != key:
            kept = model._kept_decoder = (key, DecodeStep(model, batch_size, length, cuda_graph, compile=compile,
                                                          whole_step=whole_step))
        step = kept[1]
    step.refresh()
    return step


@torch.no_grad()
def generate(model, idx, max_new_tokens, attention_mask=None, temperature=1.0, top_k=None, top_p=None,
             eos_id=None, pad_id=0, generator=None, suppress_ids=None, cuda_graph=False, compile_step=False,
             whole_step=False):
    """
    `model.generate(...)` (gpt.py) made fast: the same arguments, the same Generation, always with
    the KV cache. cuda_graph: replay the decode step's forward pass as a CUDA graph (CUDA only);
    whole_step: record the sampling and its bookkeeping in the same graph; compile_step: the
    decode step compiled by torch.compile (see DecodeStep for all three). On CUDA, whether every
    row has finished is checked every 16 steps (a check is a host-device sync), so the result may
    carry a few more columns of padding than gpt.py's, and a sampling generator may have drawn the
    noise of those steps too (a later call that shares it then draws other numbers than after
    gpt.py's). On a CPU both check at every step.
    """
    B, T = idx.shape
    N = max_new_tokens
    if N <= 0:
        raise UserError(f"max_new_tokens must be positive, got {N}")
    if T + N > model.config.block_size:
        raise UserError(f"prompt of {T} tokens + max_new_tokens {N} exceeds block_size {model.config.block_size}")
    was_training = model.training
    model.eval()
    device = idx.device
    if attention_mask is None:
        attention_mask = torch.ones_like(idx)
    decode = decoder(model, B, T + N, cuda_graph, compile_step, whole_step)  # owns the KV cache and rollout
    rollout = decode.rollout
    sampling = Sampling(temperature, top_k, top_p, eos_id, pad_id, suppress_ids is not None,
                        generator if temperature > 0 else None)  # greedy draws nothing: graphs kept for any
    rollout.start(idx, attention_mask, sampling, suppress_ids)
    check_every = 16 if device.type == "cuda" else 1
    # a CPU's eager steps drop finished rows as they go (DecodeStep.keep); a GPU's step costs its kernel
    # launches whatever its rows, and reading which rows finished is a host-device sync there
    shrink = device.type == "cpu" and not compile_step
    whole = None                               # once they have: the whole batch's outputs (Rollout.write_into)

    # 1) prefill: the whole prompt in one pass, keys and values into slots 0..T-1
    pos, _ = padded_positions(attention_mask, model.config.block_size)
    slots = torch.arange(T, device=device)
    mask = causal_mask(rollout.valid, slots)                            # (B, 1, T, T+N)
    logits = model.lm_head(model.hidden_states(idx, pos, mask, decode.cache, slots)[:, -1])  # (B, V)
    rollout.pick(logits)                                                # the first new token of every row

    # 2) decode: the tokens just picked, attending over the cache; pick the next ones
    for i in range(1, N):
        if i % check_every == 0 and bool(rollout.finished.all()):      # a sync point
            N = i
            break
        if shrink and i % SHRINK_EVERY == 0:
            live = (~rollout.finished).nonzero().squeeze(1)             # a sync point
            if len(live) <= SHRINK_BELOW * len(rollout.finished):
                whole = rollout.write_into(whole)
                decode.keep(live)
        decode.advance(T + i)

    model.train(was_training)
    tokens, response_mask, logprobs = rollout.write_into(whole) if whole is not None else \
        (rollout.tokens, rollout.response_mask, rollout.logprobs)
    return Generation(tokens[:, :T + N].clone(), response_mask[:, :N].long(), logprobs[:, :N].clone())
