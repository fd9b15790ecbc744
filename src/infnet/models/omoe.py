"""OMoE: one-gate Mixture-of-Experts (the "OMoE" baseline of Ma et al., KDD 2018).

Equations to code (MMoE's Eq. 5 under its Eq. 1):

    y_k  = h^k(f(x)),    f(x) = sum_i g(x)_i f_i(x),    g(x) = softmax(W_g x)

The same experts, towers and defaults as `mmoe.py`; the only difference is that one
gate g, shared by all tasks, mixes the experts (`one_gate`), so every task tower reads
the same mixture.

Inputs read only as pooled means: the behaviour histories, see `ignored_inputs`.
"""

from __future__ import annotations

from infnet.models.base import register
from infnet.models.mmoe import MMoE


@register("omoe")
class OMoE(MMoE):
    class Config(MMoE.Config):
        """The options of MMoE."""

    one_gate = True
