"""The time loop of one LSTM layer (both directions at once), with a hand-written backward.

Low-level; used by `elmo_core.lstm.BiLstm`. The input half of the gates (``xw``) is computed
outside, as one large matrix product; this module runs the per-step part:

    z = xw_t + h_{t-1} W_h           (gate blocks i, f, o, j; the j block arrives doubled, 2j)
    s = sigmoid(z);  tanh(j) = 2 s_j - 1
    c = clip(sigmoid(f) c_{t-1} + sigmoid(i) tanh(j));  h = clip((sigmoid(o) tanh(c)) W_P)

Why a custom autograd function: with plain autograd, every time step produces its own full
``W_h``/``W_P`` gradient and accumulates it (T weight-sized products and additions per layer).
Here the backward runs the recurrence once per step for the state gradients only and forms the
weight gradients at the end as ONE batched product over all steps.

Few operations per step (what bounds a GPU, where each is a kernel launch): the forward writes
the step's saved values in place (``out=``) and carries the state as the step's own result;
the backward forms the element-wise derivatives for blocks of steps at once and runs 7
operations per step. On an H200 that made a ``small`` training step 1.43x and an ``original``
one 1.31x faster (batches of 128 sentences; `benchmarks/README.md`). The backward is checked
against finite differences in float64 (tests/test_lstm_recurrence.py).

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


def _steps(xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip, saved=None, cell=None):
    """Forward time loop (no autograd) -> out (2, T, B, P), final c (2, B, D), h (2, B, P).

    The running state is the previous step's (2, n, .) result itself (no copy into a state
    buffer); a row's final state is copied out once, when it stops. ``saved`` (training): dict
    of (2, T, B, .) buffers ``s`` (gate sigmoids), ``c`` (clipped cells), ``tanh_c``, ``hidden``
    that the step writes in place (``out=``). ``cell`` (inference only): a compiled
    `cell_update` for each step's elementwise work."""
    _, T, B, four_d = xw.shape
    D = four_d // 4
    out = xw.new_zeros(2, T, B, w_p.shape[2])
    c_final, h_final = c0.clone(), h0.clone()
    c, h = c0, h0
    running = B  # rows :running are still in c, h
    for t in range(T):
        n = active[t]
        if n < running:  # rows n..running ended at step t - 1
            c_final[:, n:running] = c[:, n:running]
            h_final[:, n:running] = h[:, n:running]
            running = n
        if n == 0:
            break
        z = torch.baddbmm(xw[:, t, :n], h[:, :n], w_h)  # (2, n, 4D)
        if cell is not None:
            c_t, hidden = cell(z, c[:, :n], float(cell_clip or 0.0))
        else:
            s = z.sigmoid_() if saved is None else torch.sigmoid(z, out=saved["s"][:, t, :n])
            i, f, o, g = s.view(2, n, 4, D).unbind(2)
            # c = f c_prev + i tanh(j), tanh(j) = 2 g - 1
            c_t = f * c[:, :n] if saved is None else torch.mul(f, c[:, :n], out=saved["c"][:, t, :n])
            c_t.addcmul_(i, g, value=2.0).sub_(i)
            if cell_clip:
                c_t.clamp_(-cell_clip, cell_clip)
            tanh_c = c_t * 2.0 if saved is None else torch.mul(c_t, 2.0, out=saved["tanh_c"][:, t, :n])
            tanh_c.sigmoid_().mul_(2.0).sub_(1.0)
            hidden = tanh_c.mul_(o) if saved is None else torch.mul(tanh_c, o, out=saved["hidden"][:, t, :n])
        h_t = torch.bmm(hidden, w_p)  # (2, n, P)
        if proj_clip:
            h_t.clamp_(-proj_clip, proj_clip)
        out[:, t, :n] = h_t
        c, h = c_t, h_t
    if running:
        c_final[:, :running] = c[:, :running]
        h_final[:, :running] = h[:, :running]
    return out, c_final, h_final


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip):
        _, T, B, four_d = xw.shape
        D = four_d // 4
        new = xw.new_zeros
        saved = {"s": new(2, T, B, 4 * D), "c": new(2, T, B, D), "tanh_c": new(2, T, B, D), "hidden": new(2, T, B, D)}
        out, c, h = _steps(xw, w_h, w_p, c0, h0, active, cell_clip, proj_clip, saved)
        ctx.save_for_backward(w_h, w_p, c0, h0, out, *saved.values())
        ctx.active, ctx.cell_clip, ctx.proj_clip = active, cell_clip, proj_clip
        return out, c, h

    @staticmethod
    def backward(ctx, d_out, d_c, d_h):
        """Per step 7 operations (2 products, 5 element-wise); the step's element-wise
        derivatives (`_step_factors`) are formed for a block of steps at once
        (`BACKWARD_BLOCK_STEPS`): every step on a GPU (a few large launches instead of ~25 small
        ones per step), 4 steps on a CPU (while they are in cache: all steps at once measured
        1.3x slower there for ``small``, one at a time slower for ``tiny``). The state
        gradients are carried as the (2, n, .) results themselves. Clip masks come from the
        clipped values (|x| < clip): they differ from ``<=`` on the raw value only at exact ties."""
        w_h, w_p, c0, h0, out, s, cs, tanh_c, hidden = ctx.saved_tensors
        active, cell_clip, proj_clip = ctx.active, ctx.cell_clip, ctx.proj_clip
        _, T, B, four_d = s.shape
        D = four_d // 4
        block = BACKWARD_BLOCK_STEPS.get(s.device.type) or T
        h_ok = (out.abs() < proj_clip).to(s.dtype) if proj_clip else None
        d_out = d_out * h_ok if h_ok is not None else d_out
        d_z = torch.zeros_like(s)  # = gradient of xw
        d_hp = torch.zeros_like(out)  # gradient of the projection output, before the clip
        d_c = d_c if d_c is not None else s.new_zeros(2, B, D)
        d_h = d_h if d_h is not None else s.new_zeros(2, B, w_p.shape[2])
        w_h_t, w_p_t = w_h.transpose(1, 2), w_p.transpose(1, 2)
        dc, dh = d_c[:, :0], d_h[:, :0]  # rows 0..n of the state gradients
        t0 = T
        for t in reversed(range(T)):
            n = active[t]
            if n == 0:
                continue
            if t < t0:  # the next block of steps back in time: t0..t
                t0 = max(0, t + 1 - block)
                factors, a, carry = _step_factors(s, cs, tanh_c, c0, t0, t + 1, active[t0], cell_clip)
            k = t - t0
            if n > dc.shape[1]:  # rows that end at step t start here with their final-state gradient
                dc = torch.cat([dc, d_c[:, dc.shape[1]:n]], 1)
                dh = torch.cat([dh, d_h[:, dh.shape[1]:n]], 1)
            dhp = d_hp[:, t, :n]
            if h_ok is not None:
                torch.addcmul(d_out[:, t, :n], dh, h_ok[:, t, :n], out=dhp)
            else:
                torch.add(d_out[:, t, :n], dh, out=dhp)
            d_hidden = torch.bmm(dhp, w_p_t)  # (2, n, D)
            dc_pre = torch.addcmul(dc, d_hidden, a[:, k, :n])
            dz = d_z[:, t, :n]
            torch.mul(dc_pre[:, :, None], factors[:, k, :n], out=dz.view(2, n, 4, D))
            torch.mul(d_hidden, factors[:, k, :n, 2], out=dz[..., 2 * D:3 * D])
            dc = dc_pre * carry[:, k, :n]
            dh = torch.bmm(dz, w_h_t)  # (2, n, P)
        if dc.shape[1] < B:  # rows never active (not produced by BiLstm: every row has a token)
            dc = torch.cat([dc, d_c[:, dc.shape[1]:]], 1)
            dh = torch.cat([dh, d_h[:, dh.shape[1]:]], 1)
        h_prev = torch.cat([h0[:, None], out[:, :-1]], 1)  # (2, T, B, P)
        flat = (2, T * B)
        d_w_h = torch.bmm(h_prev.reshape(*flat, -1).transpose(1, 2), d_z.reshape(*flat, -1))
        d_w_p = torch.bmm(hidden.reshape(*flat, -1).transpose(1, 2), d_hp.reshape(*flat, -1))
        return d_z, d_w_h, d_w_p, dc, dh, None, None, None


# Steps whose element-wise derivatives `backward` forms at once, per device type (None: all).
BACKWARD_BLOCK_STEPS = {"cpu": 4, "cuda": None}


def _step_factors(s, cs, tanh_c, c0, t0, t1, n, cell_clip):
    """Element-wise derivatives of steps t0..t1-1, rows :n (inputs: the forward's saved (2, T, B, .)
    buffers): ``factors`` (2, k, n, 4, D) with dz_{i,f,g} = dc_pre * factors and
    dz_o = d_hidden * factors[..., 2, :]; ``a`` = d hidden / d c (2, k, n, D);
    ``carry`` (2, k, n, D) with dc_prev = dc_pre * carry. The cell clip's mask (|c| < clip) is
    folded into factors i, f, g and carry, where dc_pre = dc + d_hidden * a is multiplied."""
    D = s.shape[-1] // 4
    i, f, o, g = s[:, t0:t1, :n].unflatten(-1, (4, D)).unbind(3)
    c_prev = cs[:, t0 - 1:t1 - 1, :n] if t0 > 0 else torch.cat([c0[:, None, :n], cs[:, :t1 - 1, :n]], 1)
    tc = tanh_c[:, t0:t1, :n]
    factors = s.new_empty(2, t1 - t0, n, 4, D)
    torch.mul((2.0 * g - 1.0) * i, 1.0 - i, out=factors[..., 0, :])
    torch.mul(c_prev * f, 1.0 - f, out=factors[..., 1, :])
    torch.mul(tc * o, 1.0 - o, out=factors[..., 2, :])
    torch.mul(2.0 * i * g, 1.0 - g, out=factors[..., 3, :])
    carry = f
    if cell_clip:
        c_ok = (cs[:, t0:t1, :n].abs() < cell_clip).to(s.dtype)
        factors[..., :2, :] *= c_ok[..., None, :]
        factors[..., 3, :] *= c_ok
        carry = f * c_ok
    a = (1.0 - tc * tc).mul_(o)
    return factors, a, carry


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
