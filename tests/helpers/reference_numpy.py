"""Slow, plain-numpy reference implementation of the ELMo biLM forward pass (test oracle).

Written independently from the bilm-tf fixture's README and the ELMo reference facts it points to
(the paper's, bilm-tf's and AllenNLP's rules; outside this repository), not from this project's code.
Everything is computed in float64, one sentence at a time, with explicit loops.
Uses only numpy and h5py; no torch.

Shapes: P = lstm.projection_dim, D = lstm.dim, F = total CNN filters, C = char dim.
"""
import h5py
import numpy as np

BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260


def load_bilm_tf_weights(hdf5_path):
    """Return {hdf5 path without leading '/': np.ndarray} for every dataset in the file."""
    out = {}
    with h5py.File(hdf5_path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = np.asarray(obj[...])
        f.visititems(visit)
    return out


def _word_char_ids(word, max_chars=50):
    """Raw bilm-tf ids (no +1): [BOW, bytes[:max_chars-2]..., EOW, PAD, ...], shape (max_chars,)."""
    ids = np.full(max_chars, PAD_CHAR, dtype=np.int64)
    if word == "<S>":
        body = [BOS_CHAR]
    elif word == "</S>":
        body = [EOS_CHAR]
    else:
        body = list(word.encode("utf-8", "ignore")[: max_chars - 2])
    seq = [BOW_CHAR] + body + [EOW_CHAR]
    ids[: len(seq)] = seq
    return ids


def char_ids_for_sentence(tokens, max_chars=50):
    """(len(tokens)+2, max_chars) int64 AllenNLP ids (+1 offset, 0 = padding), <S>/</S> added."""
    words = ["<S>"] + list(tokens) + ["</S>"]
    return np.stack([_word_char_ids(w, max_chars) + 1 for w in words]).astype(np.int64)


def _act(name, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    raise ValueError(name)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def token_encoder(weights, options, char_ids):
    """char_ids (B, T, L) int, AllenNLP +1 ids -> (B, T, P) float64 token embeddings.

    char embedding (262 rows, zero row 0 prepended to the stored 261) -> per-filter valid
    conv over the L positions -> max over positions -> activation -> concat (F) ->
    n_highway highway layers -> linear projection to P.
    """
    cnn = options["char_cnn"]
    table = weights["char_embed"].astype(np.float64)                 # (261, C)
    table = np.concatenate([np.zeros((1, table.shape[1])), table])   # (262, C)
    char_ids = np.asarray(char_ids)
    B, T, L = char_ids.shape
    emb = table[char_ids]                                            # (B, T, L, C)
    feats = []
    for i, (width, n_f) in enumerate(cnn["filters"]):
        W = weights["CNN/W_cnn_%d" % i][0].astype(np.float64)        # (width, C, n_f)
        b = weights["CNN/b_cnn_%d" % i].astype(np.float64)           # (n_f,)
        n_pos = L - width + 1
        conv = np.zeros((B, T, n_pos, n_f))
        for p in range(n_pos):
            window = emb[:, :, p:p + width, :]                       # (B, T, width, C)
            conv[:, :, p, :] = np.einsum("btwc,wcf->btf", window, W) + b
        feats.append(_act(cnn["activation"], conv.max(axis=2)))      # max THEN activation
    x = np.concatenate(feats, axis=-1)                               # (B, T, F)
    for k in range(cnn["n_highway"]):
        pre = "CNN_high_%d/" % k
        g = _sigmoid(x @ weights[pre + "W_carry"].astype(np.float64) + weights[pre + "b_carry"])
        t = np.maximum(x @ weights[pre + "W_transform"].astype(np.float64)
                       + weights[pre + "b_transform"], 0.0)
        x = g * t + (1.0 - g) * x
    return x @ weights["CNN_proj/W_proj"].astype(np.float64) + weights["CNN_proj/b_proj"]


def _lstm_cell(W, B, WP, x, c_prev, h_prev, cell_clip, proj_clip):
    """One TF LSTMCell step with projection. x (in,), c_prev (D,), h_prev (P,) -> (c, h)."""
    z = np.concatenate([x, h_prev]) @ W + B                          # (4D,), gates i, j, f, o
    i, j, f, o = np.split(z, 4)
    c = _sigmoid(f + 1.0) * c_prev + _sigmoid(i) * np.tanh(j)        # forget bias at run time
    if cell_clip:
        c = np.clip(c, -cell_clip, cell_clip)
    h = (_sigmoid(o) * np.tanh(c)) @ WP                              # (P,)
    if proj_clip:
        h = np.clip(h, -proj_clip, proj_clip)
    return c, h


def lstm_direction(weights, options, x, direction, state=None):
    """Run the stack RNN_{direction} over x (T, P), already in this direction's reading order.

    state: None (zeros) or [(c (D,), h (P,)) per layer].
    Returns (outputs: [(T, P) per layer], final_state: [(c, h) per layer]).
    Outputs are in the same (reading) order as x; skip connections (if enabled) add each
    layer's input to its output from layer 1 on.
    """
    lo = options["lstm"]
    D, P, n_layers = lo["dim"], lo["projection_dim"], lo["n_layers"]
    skip = lo.get("use_skip_connections", False)
    cell_clip, proj_clip = lo.get("cell_clip"), lo.get("proj_clip")
    inp = np.asarray(x, dtype=np.float64)
    outputs, final = [], []
    for l in range(n_layers):
        pre = "RNN_%d/RNN/MultiRNNCell/Cell%d/LSTMCell/" % (direction, l)
        W = weights[pre + "W_0"].astype(np.float64)                  # (in + P, 4D)
        B = weights[pre + "B"].astype(np.float64)                    # (4D,)
        WP = weights[pre + "W_P_0"].astype(np.float64)               # (D, P)
        if state is None:
            c, h = np.zeros(D), np.zeros(P)
        else:
            c, h = (np.asarray(s, dtype=np.float64) for s in state[l])
        out = np.zeros((inp.shape[0], P))
        for t in range(inp.shape[0]):
            c, h = _lstm_cell(W, B, WP, inp[t], c, h, cell_clip, proj_clip)
            out[t] = h
        if skip and l > 0:
            out = out + inp
        outputs.append(out)
        final.append((c, h))
        inp = out
    return outputs, final


def bilm_forward(weights, options, tokens, state=None):
    """Full biLM on one sentence (tokens without <S>/</S>; they are added here).

    state: None or {'fwd': [(c, h) per layer], 'bwd': [...]} carried from a previous call.
    Returns {'layers': (n_layers+1, n, 2P) float64 with layer 0 = [e; e] and layer l = [f_l; b_l],
             <S>/</S> positions removed,
             'state': {'fwd': ..., 'bwd': ...} final states after reading the whole sequence}.
    """
    ids = char_ids_for_sentence(tokens, options["char_cnn"]["max_characters_per_token"])
    e = token_encoder(weights, options, ids[None])[0]                # (n+2, P)
    st = state or {"fwd": None, "bwd": None}
    f_out, f_state = lstm_direction(weights, options, e, 0, st["fwd"])
    b_out, b_state = lstm_direction(weights, options, e[::-1], 1, st["bwd"])
    b_out = [o[::-1] for o in b_out]                                 # back to sentence order
    layers = [np.concatenate([e, e], axis=-1)]
    layers += [np.concatenate([f, b], axis=-1) for f, b in zip(f_out, b_out)]
    layers = np.stack(layers)[:, 1:-1, :]                            # drop <S>, </S>
    return {"layers": layers, "state": {"fwd": f_state, "bwd": b_state}}
