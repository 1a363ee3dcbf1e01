"""The time loop of one LSTM layer (both directions at once), with a hand-written backward.

Low-level; used by `elmo_core.lstm.BiLstm`. The input half of the gates (``xw``) is computed
outside, as one large matrix product; this module runs the per-step part:

    z = xw_t + h_{t-1} W_h           (gate blocks i, f, o, j; the j block arrives doubled, 2j)
    s = sigmoid(z);  tanh(j) = 2 s_j - 1
    c = clip(sigmoid(f) c_{t-1} + sigmoid(i) tanh(j));  h = clip((sigmoid(o) tanh(c)) W_P)

Why a custom autograd function: with plain autograd, every time step produces its own full
``W_h``/``W_P`` gradient and accumulates it (T weight-sized products and additions per layer).
Here the backward runs the recurrence once per step for the state gradients only and forms the
weight gradients at the end as ONE batched product over all steps. It is checked against
finite differences in float64 (tests/test_lstm_recurrence.py).

Rows are sorted by length (longest first); ``active[t]`` rows take part in step t, the others
keep their state. Shapes: xw (2, T, B, 4D), w_h (2, P, 4D), w_p (2, D, P), c0 (2, B, D),
h0 (2, B, P) -> out (2, T, B, P) (zero where inactive), c (2, B, D), h (2, B, P).
"""

from __future__ import annotations

import torch


def cell_update(z: torch.Tensor, c_prev: torch.Tensor, cell_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's elementwise work, written for a compiler to fuse: gate pre-activations
    z (2, n, 4D) (j block doubled) and c_prev (2, n, D) -> new cell c (clipped when
    ``cell_clip`` > 0) and ``hidden = sigmoid(o) tanh(c)`` (2, n, D), before the projection."""
    D = c_prev.shape[-1]
    s = torch.sigmoid(z)
    i, f, o, g = s[..., :D], s[..., D:2 * D], s[..., 2 * D:3 * D], s[..., 3 * D:]
    c = f * c_prev + i * (2.0 * g - 1.0)
    if cell_clip > 0:
        c = c.clamp(-cell_clip, cell_clip)
    return c, (2.0 * torch.sigmoid(2.0 * c) - 1.0) * o


_FUSED_CELL = None  # `cell_update` compiled by `use_fused_cell`, or None: the eager loop


def use_fused_cell(enabled: bool = True) -> None:
    """Inference only: run each step's elementwise work (`cell_update`) as one compiled kernel
    (``torch.compile``; on a GPU one Triton kernel in place of about ten launches per step, on
    a CPU one C++ loop, which needs a C++ compiler). Outputs stay within 1e-5 of the eager
    loop in float32 (tests/test_lstm_recurrence.py). The first call of each device compiles
    (seconds); training keeps the eager loop and its hand-written backward."""
    global _FUSED_CELL
    _FUSED_CELL = torch.compile(cell_update, dynamic=True, fullgraph=True) if enabled else None


def _steps(xw, w_h, w_p, c, h, active, cell_clip, proj_clip, saved=None, cell=None):
    """Forward time loop (no autograd). Fills `saved` (dict of (2, T, B, .) buffers) if given;
    ``cell`` (inference only): a compiled `cell_update` for each step's elementwise work."""
    _, T, B, four_d = xw.shape
    D = four_d // 4
    out = xw.new_zeros(2, T, B, w_p.shape[2])
    c, h = c.clone(), h.clone()
    for t in range(T):
        n = active[t]
        if n == 0:
            break
        if saved is not None:
            saved["h_prev"][:, t, :n] = h[:, :n]
            saved["c_prev"][:, t, :n] = c[:, :n]
        z = torch.baddbmm(xw[:, t, :n], h[:, :n], w_h)  # (2, n, 4D)
        if cell is not None:
            c_t, hidden = cell(z, c[:, :n], float(cell_clip or 0.0))
        else:
            s = z.sigmoid_()
            i, f, o, g = s.view(2, n, 4, D).unbind(2)
            tanh_j = g.mul(2.0).sub_(1.0)
            c_t = torch.addcmul(f * c[:, :n], i, tanh_j)
            if saved is not None:
                saved["s"][:, t, :n] = s
                if cell_clip:
                    saved["c_ok"][:, t, :n] = c_t.abs() <= cell_clip
            if cell_clip:
                c_t.clamp_(-cell_clip, cell_clip)
            tanh_c = (2.0 * c_t).sigmoid_().mul_(2.0).sub_(1.0)
            hidden = tanh_c * o  # (2, n, D)
            if saved is not None:
                saved["tanh_c"][:, t, :n] = tanh_c
                saved["hidden"][:, t, :n] = hidden
        h_t = torch.bmm(hidden, w_p)  # (2, n, P)
        if saved is not None and proj_clip:
            saved["h_ok"][:, t, :n] = h_t.abs() <= proj_clip
        if proj_clip:
            h_t.clamp_(-proj_clip, proj_clip)
        c[:, :n] = c_t
        h[:, :n] = h_t
        out[:, t, :n] = h_t
    return out, c, h


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip):
        _, T, B, four_d = xw.shape
        D, P = four_d // 4, w_p.shape[2]
        new = xw.new_zeros
        saved = {"h_prev": new(2, T, B, P), "c_prev": new(2, T, B, D), "s": new(2, T, B, 4 * D),
                 "tanh_c": new(2, T, B, D), "hidden": new(2, T, B, D),
                 "c_ok": torch.ones(2, T, B, D, dtype=torch.bool, device=xw.device),
                 "h_ok": torch.ones(2, T, B, P, dtype=torch.bool, device=xw.device)}
        out, c, h = _steps(xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip, saved)
        ctx.save_for_backward(w_h, w_p, *saved.values())
        ctx.active = active
        return out, c, h

    @staticmethod
    def backward(ctx, d_out, d_c, d_h):
        w_h, w_p, h_prev, c_prev, s, tanh_c, hidden, c_ok, h_ok = ctx.saved_tensors
        active = ctx.active
        _, T, B, four_d = s.shape
        D = four_d // 4
        d_z = torch.zeros_like(s)  # = gradient of xw
        d_hp = torch.zeros_like(h_prev)  # gradient of the projection output, before the clip
        dc = d_c.clone() if d_c is not None else s.new_zeros(2, B, D)
        dh = d_h.clone() if d_h is not None else s.new_zeros(2, B, w_p.shape[2])
        w_h_t, w_p_t = w_h.transpose(1, 2), w_p.transpose(1, 2)
        for t in reversed(range(T)):
            n = active[t]
            if n == 0:
                continue
            dh_t = dh[:, :n] + d_out[:, t, :n]
            dhp = dh_t * h_ok[:, t, :n]
            d_hp[:, t, :n] = dhp
            d_hidden = torch.bmm(dhp, w_p_t)  # (2, n, D)
            i, f, o, g = s[:, t, :n].view(2, n, 4, D).unbind(2)
            tc = tanh_c[:, t, :n]
            dc_t = dc[:, :n] + d_hidden * o * (1.0 - tc * tc)
            dc_t = dc_t * c_ok[:, t, :n]
            tanh_j = 2.0 * g - 1.0
            dz = d_z[:, t, :n].view(2, n, 4, D)
            dz[:, :, 0] = dc_t * tanh_j * i * (1.0 - i)
            dz[:, :, 1] = dc_t * c_prev[:, t, :n] * f * (1.0 - f)
            dz[:, :, 2] = d_hidden * tc * o * (1.0 - o)
            dz[:, :, 3] = dc_t * i * 2.0 * g * (1.0 - g)
            dc[:, :n] = dc_t * f
            dh[:, :n] = torch.bmm(d_z[:, t, :n], w_h_t)
        flat = (2, T * B)
        d_w_h = torch.bmm(h_prev.reshape(*flat, -1).transpose(1, 2), d_z.reshape(*flat, -1))
        d_w_p = torch.bmm(hidden.reshape(*flat, -1).transpose(1, 2), d_hp.reshape(*flat, -1))
        return d_z, d_w_h, d_w_p, dc, dh, None, None, None


def recurrence(xw: torch.Tensor, w_h: torch.Tensor, w_p: torch.Tensor, c0: torch.Tensor, h0: torch.Tensor,
               active: list[int], cell_clip: float | None, proj_clip: float | None):
    """Run the layer's time loop; differentiable (custom backward) when autograd needs it.

    Under autocast (bfloat16 training on GPU) the loop runs in float32 with autocast off: the
    cell state accumulates over every step, and its small per-step products gain little from
    bfloat16; the large products around it (the input half ``xw``, the char CNN, the softmax)
    stay in autocast's precision. Outputs are float32."""
    if torch.is_autocast_enabled(xw.device.type):
        with torch.autocast(xw.device.type, enabled=False):
            return recurrence(xw.float(), w_h.float(), w_p.float(), c0.float(), h0.float(), active,
                              cell_clip, proj_clip)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (xw, w_h, w_p, c0, h0))
    if needs_grad:
        return _Recurrence.apply(xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip)
    with torch.no_grad():
        return _steps(xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip, cell=_FUSED_CELL)
