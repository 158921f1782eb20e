"""The hardened YAML reader of params files, ``--set`` values and the other YAML inputs.

YAML 1.2 read with ruamel.yaml, the way DVC reads and writes params.yaml (``yes`` is a string),
duplicate keys refused with both line numbers, merge keys refused, and the composed node graph
measured before anything is constructed, so an alias bomb is refused unexpanded. Every refusal is
one line (:class:`YamlProblem`); the caller adds the file's name. pipeline/core/params.py (the
schema) reads through :func:`load_yaml`.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.constructor import DuplicateKeyError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

# Far above any real params file (about 80 values, 4 levels), far below what hurts to build,
# validate or print: an alias bomb is refused before anything expands it.
MAX_VALUES = 10_000
MAX_DEPTH = 20
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlProblem(Exception):
    """Why a YAML text was refused, in one line without the file's name (the caller adds it).

    ``line``: where, when known; a one-line ``--set`` value leaves it out (``reason`` alone).
    ``syntax``: the text is not YAML at all (a ``--set`` value then stays the text as given).
    """

    def __init__(self, reason: str, line: int | None = None, *, syntax: bool = False) -> None:
        where = f"line {line}: " if line else ""
        super().__init__(f"not valid YAML: {where}{reason}" if syntax else f"{where}{reason}")
        self.reason = reason
        self.syntax = syntax


class _Composer(Composer):
    """ruamel's composer, plus a look at the whole node graph before anything is constructed.

    Composing is linear in the text (an alias is one more reference to its anchor's node);
    constructing, validating or printing the data walks every alias again, so the checks of
    :func:`_check_graph` happen here, between the two.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        # ruamel only warns (on stderr) about an anchor defined twice; _check_graph refuses it.
        self.warn_double_anchors = False

    def compose_document(self) -> Any:
        node = super().compose_document()
        # A `%YAML 1.1` directive would switch ruamel to YAML 1.1 scalars (`yes` a boolean).
        version = self.loader.resolver.processing_version
        if version != (1, 2):
            raise YamlProblem(
                f"declares %YAML {'.'.join(map(str, version))}; params are read as YAML 1.2:"
                " remove the directive"
            )
        _check_graph(node)
        return node


class _Constructor(SafeConstructor):
    """ruamel's safe constructor (plain dicts, lists, scalars); a duplicate key in one line."""

    def check_mapping_key(
        self, node: MappingNode, key_node: Node, mapping: Any, key: Any, value: Any
    ) -> bool:
        try:
            return super().check_mapping_key(node, key_node, mapping, key, value)
        except DuplicateKeyError:
            # ruamel's message is a dozen lines and does not say where the first one is.
            first = next(
                (
                    other.start_mark.line + 1
                    for other, _ in node.value
                    if other is not key_node and self.construct_object(other, deep=True) == key
                ),
                None,
            )
            lines = f"lines {first} and " if first else "line "
            raise YamlProblem(
                f"duplicate key {key!r} ({lines}{key_node.start_mark.line + 1})"
            ) from None


def _check_graph(root: Node) -> None:
    """Refuse what would expand badly: over MAX_VALUES values or MAX_DEPTH levels once every
    alias is followed, an alias inside its own anchor, an anchor defined twice, a merge key.

    One pass over the composed nodes, each visited once (sizes are summed, not expanded), and
    iterative: a chain of a thousand anchors must not hit Python's recursion limit.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    anchors: dict[str, Node] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        line = node.start_mark.line + 1
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            depth[id(node)] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[id(node)] > MAX_VALUES:
                raise YamlProblem(
                    f"aliases would expand to more than {MAX_VALUES} values; refused unexpanded"
                    " (a YAML alias bomb?)"
                    if node.anchor or any(child.anchor for child in children)
                    else f"more than {MAX_VALUES} values",
                    line,
                )
            if depth[id(node)] > MAX_DEPTH:
                raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep", line)
            continue
        if id(node) in size:
            continue  # another alias of a node already measured
        if id(node) in on_path:
            raise YamlProblem(f"alias *{node.anchor} refers to its own anchor", line)
        if node.anchor is not None:
            first = anchors.setdefault(node.anchor, node)
            if first is not node:
                raise YamlProblem(
                    f"anchor &{node.anchor} defined again"
                    f" (first on line {first.start_mark.line + 1})",
                    line,
                )
        if isinstance(node, MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    # YAML 1.1 only; ruamel would also skip the duplicate-key check around it.
                    raise YamlProblem(
                        "merge keys (<<) are not read; write the keys out",
                        key_node.start_mark.line + 1,
                    )
        on_path.add(id(node))
        stack.append((node, True))
        # Reversed: popped in document order, so "first" anchors and errors read top-down.
        stack.extend((child, False) for child in reversed(children) if id(child) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str) -> Any:
    """``text`` as plain dicts, lists and scalars, read as YAML 1.2 the way DVC reads it.

    Raises YamlProblem with a one-line reason.
    """
    # A new reader each time: ruamel's YAML objects keep per-document state.
    reader = YAML(typ="safe", pure=True)
    reader.Composer = _Composer
    reader.Constructor = _Constructor
    # ruamel's own guard, in its (recursive) composer; _check_graph counts alias chains too.
    reader.max_depth = MAX_DEPTH
    try:
        return reader.load(text)
    except YamlProblem:
        raise
    except MaxDepthExceededError as exc:
        raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep", _line(exc)) from None
    except MarkedYAMLError as exc:
        # ruamel's str() is several lines and quotes the source text; keep its two facts.
        reason = one_line(exc.problem or exc.context or type(exc).__name__)
        if exc.problem and exc.context and exc.context_mark:
            reason += f" ({exc.context} from line {exc.context_mark.line + 1})"
        raise YamlProblem(reason, _line(exc), syntax=True) from None
    except YAMLError as exc:  # the reader's: a character YAML does not allow
        raise YamlProblem(one_line(str(exc)), syntax=True) from None


def _line(exc: MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark else None


def one_line(text: str) -> str:
    return " ".join(text.split())
