"""The ranking score: an arithmetic formula over the task scores (and the bid).

    "click"                          the click probability (the default; else the first task)
    "click * bid"                    pCTR x bid, eCPM-style (the default when a bid is given)
    "click + 0.5 * like + 0.1 * watch_time"

Names are task names and `bid`; operators + - * / ** and unary minus; numbers. The formula
is parsed once (Python's ast, nothing is evaluated as code) and evaluated over numpy
arrays of all candidates at once.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

import numpy as np

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class Formula:
    def __init__(self, text: str, tasks: list[str]) -> None:
        self.text = text
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError as err:
            raise ValueError(f"ranking formula {text!r}: not an expression ({err.msg})") from None
        allowed = set(tasks) | {"bid"}
        self.names: set[str] = set()
        self._fn = self._compile(tree, allowed)

    def _compile(
        self, node: ast.AST, allowed: set[str]
    ) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            value = float(node.value)
            return lambda env: value
        if isinstance(node, ast.Name):
            if node.id not in allowed:
                raise ValueError(
                    f"ranking formula {self.text!r}: unknown name {node.id!r} (names: {sorted(allowed)})"
                )
            self.names.add(node.id)
            name = node.id
            return lambda env: env[name]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op, left, right = (
                _BINARY[type(node.op)],
                self._compile(node.left, allowed),
                self._compile(node.right, allowed),
            )
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner, sign = (
                self._compile(node.operand, allowed),
                -1.0 if isinstance(node.op, ast.USub) else 1.0,
            )
            return lambda env: sign * inner(env)
        raise ValueError(
            f"ranking formula {self.text!r}: {ast.unparse(node)!r} is not allowed (use task names, bid, numbers, + - * / **)"
        )

    @property
    def uses_bid(self) -> bool:
        return "bid" in self.names

    def __call__(self, scores: dict[str, np.ndarray], bid: np.ndarray | None = None) -> np.ndarray:
        env = dict(scores)
        if bid is not None:
            env["bid"] = bid
        with np.errstate(all="ignore"):
            out = np.broadcast_to(
                np.asarray(self._fn(env), dtype=np.float64), next(iter(scores.values())).shape
            )
        return np.nan_to_num(out, nan=-np.inf)


def default_formula(tasks: list[str]) -> str:
    """The click probability: the first task named like click (click, is_click), else the
    first task."""
    return next((t for t in tasks if "click" in t), tasks[0])


class Ranker:
    """The formula without a bid and the one with a bid."""

    def __init__(
        self, tasks: list[str], formula: str | None = None, bid_formula: str | None = None
    ) -> None:
        self.plain = Formula(formula or default_formula(tasks), tasks)
        if self.plain.uses_bid:
            raise ValueError(f"ranking formula {self.plain.text!r} uses bid; put it in bid_formula")
        self.with_bid = Formula(bid_formula or f"({self.plain.text}) * bid", tasks)
        self._check(tasks)

    def _check(self, tasks: list[str]) -> None:
        """Refuse at startup a formula that gives no finite score on ordinary scores (a
        division by a task difference, an overflow), instead of failing every request."""
        grid = np.linspace(0.01, 0.99, 7)
        scores = {t: np.roll(grid, i) for i, t in enumerate(tasks)}
        for formula, bid in ((self.plain, None), (self.with_bid, np.full(len(grid), 1.5))):
            env = scores if bid is None else {**scores, "bid": bid}
            with np.errstate(all="ignore"):  # before __call__'s clipping of inf and NaN
                out = np.asarray(formula._fn(env), dtype=np.float64)
            if not np.isfinite(out).all():
                raise ValueError(
                    f"ranking formula {formula.text!r} gives non-finite scores on ordinary task "
                    "scores (0.01..0.99); check divisions and powers"
                )

    def __call__(self, scores: dict[str, np.ndarray], bid: np.ndarray | None) -> np.ndarray:
        return self.plain(scores) if bid is None else self.with_bid(scores, bid)
