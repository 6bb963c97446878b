"""What vaekit reads from files a user edited or an attacker wrote: JSON and YAML bounded
in size and nesting depth, tensors checked finite, each refusal one line naming the file.

Python's json and yaml parsers recurse once per level: a config.json of 100,000 nested
brackets (200 kB) ends in a RecursionError, and one a little less deep passes the parser
and breaks whatever walks the result next. Every JSON and YAML text vaekit reads goes
through `loads_json` / `read_json` / `check_depth` here instead, so the limits are one
place. A tensor read from a file (a resume state, LPIPS or Inception weights) is checked
finite where it is read (`check_finite`): a NaN there would otherwise surface far away,
as a diverged run or a metric of NaN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, VaekitError, first_line

# No file vaekit reads nests deeper than a handful of levels; 64 leaves room for a user's
# own architecture arguments and stays far below Python's recursion limit.
MAX_DEPTH = 64
# config.json, a dataset's state.json, a lock file: kilobytes. 16 MiB is not a config.
MAX_JSON_BYTES = 16 * 2**20

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class TextLimitError(ValueError):
    """A JSON or YAML text over the size or depth limit (a ValueError, as the parsers'
    own errors are, so that callers that skip malformed text skip it too)."""


def nesting_depth(text: str) -> int:
    """How deep JSON text nests its brackets (strings skipped), without parsing it."""
    bare = _STRING.sub('""', text).encode("utf-8", "replace")
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.zeros(len(codes), dtype=np.int64)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def loads_json(text: str | bytes, source: str) -> Any:
    """json.loads of `text`, refused first when it is over MAX_JSON_BYTES or nests past
    MAX_DEPTH (TextLimitError); malformed JSON raises json's ValueError as usual."""
    if len(text) > MAX_JSON_BYTES:
        raise TextLimitError(
            f"{source} holds {len(text):,} bytes, more than the {MAX_JSON_BYTES:,} a JSON "
            "file vaekit reads may hold"
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise TextLimitError(
            f"{source} nests {depth:,} levels deep, more than the {MAX_DEPTH} a JSON file "
            "vaekit reads may; it is damaged or not what it claims to be"
        )
    return json.loads(text)


def load_json_file(path: str | Path) -> Any:
    """The JSON of the file `path`, its size checked before it is read; raises what
    `loads_json` and reading raise (ValueError, OSError) for the caller to word."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise TextLimitError(
            f"{path} holds {size:,} bytes, more than the {MAX_JSON_BYTES:,} a JSON file "
            "vaekit reads may hold"
        )
    return loads_json(path.read_text(encoding="utf-8"), str(path))


def read_json(path: str | Path, error: type[VaekitError] = CheckpointError) -> Any:
    """The JSON of the file `path`, bounded as `loads_json` says; anything wrong with it
    (missing, unreadable, too large, too deep, not JSON) is one `error` naming the file."""
    try:
        return load_json_file(path)
    except TextLimitError as e:
        raise error(str(e)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({first_line(e)})") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e})") from None


def check_depth(value: Any, source: str) -> Any:
    """`value` (parsed JSON or YAML), refused with TextLimitError when it nests past
    MAX_DEPTH; walked without recursion, each shared container once per depth (YAML's
    aliases make a 'billion laughs' graph of a few nodes that expands to 10^9)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    deepest: dict[int, int] = {}  # id of a container -> the greatest depth it was seen at
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TextLimitError(
                f"{source} nests more than {MAX_DEPTH} levels deep; it is damaged or not "
                "what it claims to be"
            )
        if isinstance(item, (dict, list, tuple)):
            if deepest.get(id(item), -1) >= depth:
                continue
            deepest[id(item)] = depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return value


def non_finite(value: Any, prefix: str = "") -> Iterator[str]:
    """The names ('optimizer.state.0.exp_avg') of the floating tensors in `value` (a tensor,
    or dicts and lists of them) that hold NaN or an infinity."""
    import torch  # here: the JSON and YAML readers above start without it

    stack: list[tuple[Any, str, int]] = [(value, prefix, 0)]
    while stack:
        item, name, depth = stack.pop()
        if isinstance(item, torch.Tensor):
            floating = item.is_floating_point() or item.is_complex()
            if floating and item.numel() and not bool(torch.isfinite(item).all()):
                yield name or "the tensor"
        elif isinstance(item, dict) and depth <= MAX_DEPTH:
            stack.extend((v, f"{name}.{k}" if name else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, (list, tuple)) and depth <= MAX_DEPTH:
            stack.extend(
                (v, f"{name}.{i}" if name else str(i), depth + 1) for i, v in enumerate(item)
            )


def check_finite(value: Any, source: str, error: type[VaekitError] = CheckpointError) -> Any:
    """`value` (tensors read from the file `source`), refused in one line naming the file
    and the first tensors that hold NaN or an infinity."""
    bad = sorted(non_finite(value))
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise error(
            f"{source} holds NaN or infinite values (in {', '.join(bad[:3])}{more}); the file "
            "is damaged or was saved from a model that diverged: use another copy"
        )
    return value
