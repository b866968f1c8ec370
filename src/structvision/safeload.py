"""Loading ``torch.save`` files without running code from them.

Files written by ``torch.save`` are pickles; a pickle can hold code that runs when it is loaded.
structvision reads them only with ``torch.load(..., weights_only=True)``, which accepts tensors,
numbers, strings, lists and dicts and refuses anything else. The refusal says what the file holds
and how to make a safe one — never that a full unpickling "will likely succeed".
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["UNSAFE_FILE_ADVICE", "load_tensors_file"]

UNSAFE_FILE_ADVICE = (
    "it holds pickled Python objects or code, not only tensors, numbers, strings, lists and "
    "dicts, and loading it would run that code. structvision never loads such files. If you "
    "trust where it comes from, make a safe file where you made it: load it there and save only "
    "its tensors, e.g. safetensors.torch.save_file(model.state_dict(), 'model.safetensors') or "
    "torch.save(model.state_dict(), 'weights.pt')"
)


def load_tensors_file(path: str | os.PathLike, *, what: str = "file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds objects other than tensors and plain containers (the message
            explains how to make a safe file), or it is not a readable ``torch.save`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        named = re.search(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", text)
        if named is None and "global" not in text.lower():
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            plain = [line for line in lines if "weights_only" not in line.lower()]
            reason = plain[0] if plain else "not a pickle"
            raise ValueError(
                f"{what} {path} is not a readable torch.save file ({reason})"
            ) from None
        detail = f" (it names {named.group(1) or named.group(2)})" if named else ""
        raise ValueError(f"{what} {path} is refused{detail}: {UNSAFE_FILE_ADVICE}") from None
    except Exception as error:  # a truncated or foreign file: RuntimeError, EOFError, ...
        raise ValueError(f"{what} {path} is not a readable torch.save file ({error})") from None
