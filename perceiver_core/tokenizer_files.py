"""Reading and writing the tokenizer's files in transformers' format.

``tokenizer_config.json`` (and, for older checkpoints, ``special_tokens_map.json`` / ``added_tokens.json``)
is merged the way transformers does it: the special-tokens map first, the config on top, then the keywords
given to ``from_pretrained``. Keys we do not know are kept in ``init_kwargs`` and written back on save, as
transformers keeps them. What we cannot honour raises: a token added beyond the 262 ids (the model's
embedding has 262 rows), or a ``from_pretrained`` keyword that renames a special token stored in the files
(transformers then *adds* the new name as id 262).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
ADDED_TOKENS_NAME = "added_tokens.json"

# Written by transformers for its own bookkeeping; they select classes or files, not behaviour.
BOOKKEEPING_KEYS = ("tokenizer_class", "backend", "special_tokens_map_file",
                    "tokenizer_file", "files_loaded", "processor_class", "auto_map", "name_or_path", "is_local",
                    "local_files_only", "vocab_file")


def token_text(value: Any) -> Any:
    """A special token given as str, ``AddedToken`` (``.content``) or its JSON dict, as its string."""
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    if hasattr(value, "content"):
        return value.content
    return value


def read_tokenizer_files(folder: Path) -> dict[str, Any]:
    """Constructor keywords stored in ``folder`` (empty when it holds no tokenizer files)."""
    merged: dict[str, Any] = {}
    for name in (SPECIAL_TOKENS_MAP_NAME, TOKENIZER_CONFIG_NAME):  # the config wins
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if name == TOKENIZER_CONFIG_NAME:
                data.pop("init_inputs", None)
            merged.update(data)
    added = folder / ADDED_TOKENS_NAME
    if added.is_file():
        extra = json.loads(added.read_text(encoding="utf-8"))
        if extra:
            raise ValueError(f"{added}: added tokens {sorted(extra)} are not supported (the Perceiver has a fixed "
                             "262-id vocabulary)")
    return merged


def decoder_tokens(decoder: dict[Any, Any], defaults: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The six id strings of ``added_tokens_decoder`` (ids 0..5; an id it leaves out keeps its default)."""
    tokens = list(defaults)
    for key, entry in decoder.items():
        index, content = int(key), token_text(entry)
        if not 0 <= index < len(defaults):
            raise ValueError(f"{where}: added token {content!r} at id {key} is not supported (ids 0..5 are the "
                             "six special tokens, ids 6..261 the bytes; the model has no row for more)")
        tokens[index] = content
    return tuple(tokens)


def check_overrides(file_kwargs: dict[str, Any], overrides: dict[str, Any], roles: tuple[str, ...]) -> None:
    """Renaming a special token stored in the files would add a 263rd id in transformers: refuse it."""
    for role in roles:
        if role in overrides and role in file_kwargs:
            new, old = token_text(overrides[role]), token_text(file_kwargs[role])
            if new is not None and new != old:
                raise ValueError(f"from_pretrained({role}={new!r}): the checkpoint's {role} is {old!r}; "
                                 "transformers would add a new token id 262, which the model's 262-row "
                                 f"embedding cannot look up. Set tokenizer.{role} = ... to reassign the role "
                                 "to an existing token instead.")


def tokenizer_config(id_tokens: tuple[str, ...], roles: dict[str, str | None], settings: dict[str, Any],
                     extra: dict[str, Any]) -> dict[str, Any]:
    """The ``tokenizer_config.json`` content, in the layout transformers 5.x writes."""
    added = {str(i): {"content": tok, "lstrip": False, "normalized": True, "rstrip": False,
                      "single_word": False, "special": False} for i, tok in enumerate(id_tokens)}
    config: dict[str, Any] = {"added_tokens_decoder": added, "backend": "custom", **extra}
    config.update({role: token for role, token in roles.items() if role != "unk_token" or token is not None})
    config.update(settings)
    config["tokenizer_class"] = "PerceiverTokenizer"
    return dict(sorted(config.items()))


def write_json(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)
