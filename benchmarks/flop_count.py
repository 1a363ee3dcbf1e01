"""Matrix-product FLOPs of one call, counted by torch's FlopCounterMode; shared by the benchmarks."""

from __future__ import annotations


def _in_place_addmm(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """(n, k) @ (k, m) added into (n, m): 2 n k m, as the counter counts ``addmm``."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _in_place_baddbmm(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """(b, n, k) @ (b, k, m) added into (b, n, m): 2 b n k m."""
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


def count_flops(fn) -> int:
    """FLOPs of the matrix products and convolutions ``fn()`` runs (forward and backward alike).

    torch 2.13's counter knows ``addmm`` and ``baddbmm`` but not their in-place forms, which
    `elmo_core.softmax.Softmax.full_nll_sums` uses to accumulate its weight gradient: they are
    counted here as the out-of-place forms are."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    with FlopCounterMode(display=False, custom_mapping={aten.addmm_: _in_place_addmm,
                                                        aten.baddbmm_: _in_place_baddbmm}) as counter:
        fn()
    return counter.get_total_flops()
