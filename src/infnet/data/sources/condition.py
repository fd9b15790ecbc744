"""Row conditions such as `rating >= 4` or `click == 1 and watch > 10` as polars expressions.

The text is parsed with Python's `ast` and only a whitelist is translated: comparisons
(chained too), `in` / `not in` over a list of constants, `and` / `or` / `not`, names
(columns) and numeric, string or boolean constants. Nothing is ever evaluated, so a
condition in a YAML file cannot run code. A column whose name is not a Python identifier
(`rating:float` of an atomic-file header, `watch time`) is written in backticks, as in
SQL: "`rating:float` >= 4".
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Collection, Iterable

import polars as pl

from infnet.config import ConfigError

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _constant(node: ast.expr) -> int | float | str | bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _constant(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"{ast.unparse(node)!r} is not a column or a constant")


_QUOTED = re.compile(r"`([^`]*)`")


def _unquote(text: str) -> tuple[str, dict[str, str]]:
    """Backtick-quoted names replaced by identifiers: (text, identifier -> column name)."""
    names: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        if not match.group(1):
            raise ValueError("an empty `` names no column")
        ident = f"_q{len(names)}_" + "_" * text.count("_q")  # never a name the text has
        names[ident] = match.group(1)
        return ident

    out = _QUOTED.sub(replace, text)
    if "`" in out:
        raise ValueError("a backtick is not closed")
    return out, names


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Translator:
    def __init__(self, numeric: Collection[str], quoted: dict[str, str]) -> None:
        self.numeric = set(numeric)
        self.quoted = quoted
        self.names: set[str] = set()

    def column(self, name: str) -> pl.Expr:
        name = self.quoted.get(name, name)
        self.names.add(name)
        # Text tables are read as strings; a column holding numbers compares as numbers.
        return pl.col(name).cast(pl.Float64) if name in self.numeric else pl.col(name)

    def operand(self, node: ast.expr) -> pl.Expr:
        return self.column(node.id) if isinstance(node, ast.Name) else pl.lit(_constant(node))

    def __call__(self, node: ast.expr) -> pl.Expr:
        if isinstance(node, ast.BoolOp):
            parts = [self(v) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self(node.operand)
        if isinstance(node, ast.Compare):
            terms = []
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):  # a < b < c
                if isinstance(op, ast.In | ast.NotIn):
                    if not isinstance(right, ast.List | ast.Tuple | ast.Set):
                        raise ValueError(
                            f"`in` needs a list of constants, got {ast.unparse(right)!r}"
                        )
                    values = [_constant(e) for e in right.elts]
                    column = self.operand(left)
                    if values and all(_is_number(v) for v in values):
                        # 4 in a float column is 4.0: compare numbers as numbers
                        column, values = column.cast(pl.Float64), [float(v) for v in values]
                    term = column.is_in(values)
                    terms.append(~term if isinstance(op, ast.NotIn) else term)
                elif type(op) in _COMPARE:
                    terms.append(_COMPARE[type(op)](self.operand(left), self.operand(right)))
                else:
                    raise ValueError(f"operator {type(op).__name__} is not allowed")
                left = right
            return pl.all_horizontal(terms) if len(terms) > 1 else terms[0]
        if isinstance(node, ast.Name):  # a boolean (or 0/1) column on its own
            return self.column(node.id).cast(pl.Boolean)
        raise ValueError(
            f"{ast.unparse(node)!r} is not allowed (only comparisons, in, and/or/not, columns, constants)"
        )


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_condition(
    text: str, key: str, columns: Iterable[str] | None = None, numeric: Collection[str] = ()
) -> pl.Expr:
    """`text` as a boolean polars expression (a null compares as false); `key` names the
    YAML key in every error. With `columns`, every name in the condition must be one of
    them; the `numeric` ones (string columns holding numbers) are cast to float."""
    try:
        plain, quoted = _unquote(text.strip())
        translate = _Translator(numeric, quoted)
        expr = translate(ast.parse(plain, mode="eval").body)
    except (SyntaxError, ValueError) as err:
        reason = err.msg if isinstance(err, SyntaxError) else str(err)
        if isinstance(err, SyntaxError) and re.search(r"[\w]:[\w]", _QUOTED.sub("", text)):
            reason += "; a column name with ':' goes in backticks: `rating:float` >= 4"
        raise ConfigError(f"{key}: condition {_short(text)!r} does not parse: {reason}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(
            f"{key}: condition {_short(text)!r} is nested too deeply to read"
        ) from None
    if columns is not None:
        missing = sorted(translate.names - set(columns))
        if missing:
            raise ConfigError(
                f"{key}: condition {text!r} names column(s) {missing} that the data does not have"
            )
    return expr.fill_null(False)
