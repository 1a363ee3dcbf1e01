"""`Elmo`: the module a downstream model puts in front of its own layers, called as AllenNLP's.

AllenNLP's documented lines give AllenNLP's numbers (only the import differs)::

    elmo = Elmo(options_file, weight_file, 2, dropout=0)
    embeddings = elmo(batch_to_ids(sentences))  # {"elmo_representations": [...] * 2, "mask": ...}

Stateful by default, as AllenNLP's: row k of a call starts from the LSTM state row k of the
previous call ended in, so the same sentence embedded twice gets different vectors;
``stateful=False`` starts every sentence from a zero state. Beyond AllenNLP: the biLM is frozen
AND in eval mode when frozen, and the optional layer norm is per token.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .bilm import BiLM
from .characters import BOS_TOKEN, MAX_CHARS_PER_TOKEN, add_sentence_boundaries, batch_to_ids, token_to_ids
from .lstm import CarriedState
from .scalar_mix import ScalarMix
from .weights import load_model


class Elmo(nn.Module):
    """ELMo representations for a downstream model (Peters et al. 2018); AllenNLP's arguments.

    Parameters
    ----------
    options_file, weight_file : str
        A bilm-tf/AllenNLP options.json + weights.hdf5 pair. (A `BiLM` as ``options_file``, or
        ``module=``, uses that model instead; `from_files` also takes a native model directory.)
    num_output_representations : int
        How many independently mixed outputs (e.g. one for the input, one for the output layer).
    requires_grad : bool, default False
        Fine-tune the biLM. When False the biLM is frozen and always runs in eval mode.
    do_layer_norm : bool, default False
        Layer norm of each biLM layer before mixing; per token (AllenNLP's is over the whole
        masked batch, so its vectors depend on batch mates when this is on).
    dropout : float, default 0.5
        Dropout on each mixed representation (training only).
    vocab_to_cache : None
        Not supported (AllenNLP's word-id shortcut); `elmo_core.embedder.Embedder` caches each
        distinct token's vector on its own.
    keep_sentence_boundaries : bool, default False
        Keep the ``<S>``/``</S>`` positions in the output (T + 2 positions, and their mask).
    scalar_mix_parameters : list of float, optional
        Fixed (not trained) mixing weights before the softmax, one per layer.
    module : BiLM, optional
        A loaded biLM instead of the two files.
    stateful : bool, default True
        Carry LSTM state per batch row across calls (AllenNLP's and bilm-tf's behaviour);
        `reset_states` goes back to zero. False: every sentence starts from a zero state, so
        its vectors never depend on what was embedded before or beside it.
    """

    def __init__(self, options_file: str | os.PathLike | BiLM | None = None,
                 weight_file: str | os.PathLike | None = None,
                 num_output_representations: int | None = None, requires_grad: bool = False,
                 do_layer_norm: bool = False, dropout: float = 0.5, vocab_to_cache: list[str] | None = None,
                 keep_sentence_boundaries: bool = False, scalar_mix_parameters: list[float] | None = None,
                 module: BiLM | None = None, stateful: bool = True) -> None:
        super().__init__()
        if num_output_representations is None:
            raise TypeError("Elmo() needs num_output_representations (e.g. Elmo(options_file, weight_file, 2))")
        if vocab_to_cache is not None:
            raise ValueError("vocab_to_cache is not supported: give character ids only "
                             "(elmo_core.embedder.Embedder encodes each distinct token once)")
        if isinstance(options_file, BiLM):  # Elmo(bilm, ...): the model itself
            options_file, module = None, options_file
        if module is not None and (options_file is not None or weight_file is not None):
            raise ValueError("give either module or options_file/weight_file, not both")
        if module is None:
            if options_file is None or weight_file is None:
                raise ValueError("Elmo needs options_file and weight_file (or module=a BiLM)")
            module = load_model(options_file=options_file, weight_file=weight_file)
        self.bilm = module
        self.requires_grad = requires_grad
        module.requires_grad_(requires_grad)
        self.dropout = nn.Dropout(dropout)
        self.keep_sentence_boundaries = keep_sentence_boundaries
        self.stateful = stateful
        self._carried = CarriedState()
        n_layers = module.config.n_output_layers
        self.scalar_mixes = nn.ModuleList(
            ScalarMix(n_layers, do_layer_norm, scalar_mix_parameters, trainable=scalar_mix_parameters is None)
            for _ in range(num_output_representations))
        if not requires_grad:
            module.eval()  # a frozen biLM never runs dropout

    @classmethod
    def from_files(cls, model_dir: str | os.PathLike | None = None, options_file: str | None = None,
                   weight_file: str | None = None, **kwargs) -> "Elmo":
        """From a native model directory or a bilm-tf options.json + weights.hdf5 pair."""
        return cls(module=load_model(model_dir, options_file, weight_file), **kwargs)

    def get_output_dim(self) -> int:
        return self.bilm.config.output_dim

    def train(self, mode: bool = True) -> "Elmo":
        super().train(mode)
        if not self.requires_grad:
            self.bilm.eval()  # a frozen biLM never runs dropout
        return self

    def reset_states(self) -> None:
        """Forget the carried LSTM state: the next call starts from zeros."""
        self._carried.reset()

    def forward(self, inputs: torch.Tensor, word_inputs: torch.Tensor | None = None) -> dict[str, object]:
        """inputs: (B, T, 50) (or (..., T, 50)) from `batch_to_ids(sentences)`, without ``<S>``/``</S>``.

        Returns ``{"elmo_representations": [(B, T, 2P)] * N, "mask": (B, T) bool}`` (T + 2 with
        ``keep_sentence_boundaries``), zero at padding.
        """
        if word_inputs is not None:
            raise ValueError("word_inputs need vocab_to_cache, which is not supported")
        if inputs.dim() < 3 or inputs.shape[-1] != MAX_CHARS_PER_TOKEN:
            raise ValueError(f"expected (batch, tokens, {MAX_CHARS_PER_TOKEN}) ids, got {tuple(inputs.shape)}")
        char_ids = inputs.reshape(-1, *inputs.shape[-2:])
        _refuse_boundaries(char_ids)
        with torch.set_grad_enabled(self.requires_grad and torch.is_grad_enabled()):
            state = self._carried.get(char_ids.shape[0]) if self.stateful else None
            out = self.bilm(add_sentence_boundaries(char_ids), state)
        if self.stateful:
            self._carried.put(out.state)
        if self.keep_sentence_boundaries:
            layers, mask = out.layers, out.mask  # (L, B, T + 2, 2P), (B, T + 2)
        else:
            mask = char_ids[:, :, 0] != 0
            # drop the <S>/</S> positions; the </S> of shorter rows sits inside T: zero it
            layers = out.layers[:, :, 1:-1] * mask[None, :, :, None].to(out.layers.dtype)
        reps = [self.dropout(mix(layers, mask)) for mix in self.scalar_mixes]
        leading = inputs.shape[:-2]
        return {"elmo_representations": [r.reshape(*leading, *r.shape[1:]) for r in reps],
                "mask": mask.reshape(*leading, mask.shape[-1])}

    def embed_sentences(self, sentences: list[list[str]]) -> dict[str, object]:
        """Convenience: token lists -> `forward` output."""
        device = next(self.bilm.parameters()).device
        return self(batch_to_ids(sentences).to(device))


def _refuse_boundaries(char_ids: torch.Tensor) -> None:
    """`Elmo` adds ``<S>``/``</S>`` itself: ids that already start with ``<S>`` would get it twice
    (and every vector computed from the doubled marker), so they are refused, not embedded."""
    if char_ids.shape[1] == 0:
        return
    bos = torch.from_numpy(token_to_ids(BOS_TOKEN).copy()).to(char_ids.device)
    if bool((char_ids[:, 0] == bos).all(dim=-1).any()):
        raise ValueError(f"the character ids already start with {BOS_TOKEN}: Elmo adds the sentence boundaries "
                         "itself; make them with batch_to_ids(sentences) (no add_boundaries=True)")
