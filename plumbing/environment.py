"""
plumbing/environment.py: what the RL steps' environment presents. InstructGPT, Section 3.5: "a
bandit environment which presents a random customer prompt and expects a response to the prompt".
Here: the training prompts, the held-out prompts the evaluations answer, and PPO-ptx's pretraining
text, from the simulated world or from your own files, checked once for every RL step.
"""

from plumbing import ddp
from plumbing.cli import UserError
from plumbing.formats import own_prompts, read_texts
from plumbing.tokenizer import corpus_split


def rl_data(cfg, tok, block_size, world=None):
    """-> (training prompt records, held-out prompt records (at most cfg.n_eval), D_pretrain as
    token ids or None). `world` (data.build's) gives the simulated API's RL prompts, its validation
    users' prompts (held out) and its corpus; without it, cfg.prompts is your file (5% held out)
    and cfg.pretrain_data your text. cfg: an RL step's Config (its prompts, pretrain_data, seed,
    n_eval, batch_size, max_new_tokens and name)."""
    prompts, eval_records = own_prompts(cfg.prompts, cfg.seed) if cfg.prompts else (world["ppo"], world["val"])
    eval_records = eval_records[:cfg.n_eval]
    room = block_size - cfg.max_new_tokens
    if room <= 0:
        raise UserError(f"--max-new-tokens {cfg.max_new_tokens} leaves no room for a prompt in the model's "
                        f"block_size {block_size}")
    cut = sum(len(tok.chat_prompt(r["prompt"])) > room for r in prompts)
    if cut:  # a rollout keeps the last `room` tokens of a longer prompt, as respond's samples do
        print(f"{cfg.name}: {cut} of {len(prompts)} prompts are longer than {room} tokens (block_size - "
              f"--max-new-tokens) and lose their left end")
    ddp.check_divides({"--batch-size (at most the number of prompts)": min(cfg.batch_size, len(prompts))})
    if len(eval_records) < ddp.world():
        raise UserError(f"{len(eval_records)} held-out prompts (--n-eval) for {ddp.world()} processes: each needs one")
    corpus = read_texts(cfg.pretrain_data) if cfg.pretrain_data else None if cfg.prompts else world["corpus"]
    ptx_ids = corpus_split(tok, corpus, block_size, f"--pretrain-data {cfg.pretrain_data}")[0] if corpus else None
    return prompts, eval_records, ptx_ids
