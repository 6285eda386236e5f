"""
plumbing/: what a first reading may skip. None of it is from the paper; the step scripts at the
top call it by name, and it imports none of them.

  cli.py         one config dataclass per script becomes its flags and --help; bad input is one line
  loop.py        a training loop's engineering: seeds and device, optimizer and learning rate, one
                 optimizer step, the metrics log, Ctrl-C and --resume
  ddp.py         several processes under torchrun: each rank's share of a batch, the weights and
                 reductions that keep it one batch (nothing on one process)
  checkpoint.py  loading the models the steps hand each other; answering prompts; scoring; lm_loss
  tokenizer.py   a byte-level BPE trained here (or GPT-2's), the chat format, padded batches
  formats.py     public data as it comes (.jsonl, .jsonl.gz, .json), every format --data takes
  environment.py the RL steps' prompts, held-out prompts and pretraining text (the world's or yours)
  engine.py      gpt.GPT.generate made fast for rollouts, held equal to it by tests
  plots.py       the PNG files of a run
"""
