"""
plumbing/cli.py: what makes each script a command: one config dataclass becomes its flags and
--help, and bad input becomes one line, never a traceback.

  UserError, run_cli     bad input is one line on stderr (`error: ...`) and exit code 2
  arg, parse_config      one config dataclass per script becomes its flags, --help and presets
  ensure_out_dir, check_positive, check_files   the checks that name the flag at fault
"""

import argparse
import dataclasses
import os
import sys
from dataclasses import field, fields

import torch.distributed as dist


class UserError(ValueError):
    """Bad input (a flag, a file, a length): scripts print it as one line and exit 2 (run_cli)."""


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
    finally:
        if dist.is_available() and dist.is_initialized():  # torchrun: leave the process group
            dist.destroy_process_group()


# -----------------------------------------------------------------------------
# Flags: one config dataclass per script

def arg(default, help, **flag):
    """A config field with its --help text: `lr: float = arg(1e-4, "peak learning rate")`. `flag`
    passes more of argparse's options (type, choices, nargs), and positional=True makes the field
    an argument without a flag name."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "flag": flag})
    return field(default=default, metadata={"help": help, "flag": flag})


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
        opts = dict(f.metadata.get("flag", {}))
        positional = opts.pop("positional", False)
        name = f.name if positional else "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if presets and f.name == "preset":
            opts["choices"] = list(presets)
        if type(default) is bool:
            opts["action"] = argparse.BooleanOptionalAction
        else:
            opts.setdefault("type", str if default is None or isinstance(default, list) else type(default))
        if "(default" not in text and not positional:
            text += f" (default: {default})"
        parser.add_argument(name, default=None, help=text, **opts)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset = given.get("preset", getattr(cls, "preset", None))
    values = {**(presets or {}).get(preset, {}), **given}
    return cls(**values)


# -----------------------------------------------------------------------------
# Checks that name the flag at fault

def ensure_out_dir(path, flag="--out-dir"):
    """Create the run folder and prove it takes files: a bad folder fails now, not after an hour."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test{os.getpid()}")  # one per process: torchrun runs several
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


def check_files(cfg, names):
    """One line naming the flag when a file it gives does not exist."""
    for name in names:
        if getattr(cfg, name) and not os.path.isfile(getattr(cfg, name)):
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: no such file")
