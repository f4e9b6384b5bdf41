"""Word-level language model: embedding -> RNN / LSTM / Transformer -> linear."""

from needle import nn, ops

__all__ = ["LanguageModel"]


class LanguageModel(nn.Module):
    """``forward(x (T, B) of word ids, h=None) -> (logits (T*B, output_size), h)``.

    ``h`` has the sequence model's form: ``(L, B, H)`` for ``'rnn'``, a pair
    ``(h, c)`` for ``'lstm'``, and a tensor of ``x``'s embedded shape for
    ``'transformer'`` (which keeps no state between calls).
    """

    def __init__(self, embedding_size, output_size, hidden_size, num_layers=1,
                 seq_model="rnn", seq_len=40, device=None, dtype="float32"):
        super().__init__()
        if seq_model not in ("rnn", "lstm", "transformer"):
            raise ValueError(f"LanguageModel: seq_model must be 'rnn', 'lstm' or "
                             f"'transformer', got {seq_model!r}")
        kw = dict(device=device, dtype=dtype)
        self.embedding_size, self.output_size = embedding_size, output_size
        self.hidden_size, self.num_layers, self.seq_model_name = hidden_size, num_layers, seq_model
        self.embedding = nn.Embedding(output_size, embedding_size, **kw)
        if seq_model == "rnn":
            self.seq_model = nn.RNN(embedding_size, hidden_size, num_layers, **kw)
            out_in = hidden_size
        elif seq_model == "lstm":
            self.seq_model = nn.LSTM(embedding_size, hidden_size, num_layers, **kw)
            out_in = hidden_size
        else:
            self.seq_model = nn.Transformer(embedding_size, hidden_size, num_layers,
                                            sequence_len=seq_len, **kw)
            out_in = embedding_size
        self.linear = nn.Linear(out_in, output_size, **kw)

    def forward(self, x, h=None):
        T, B = x.shape
        out, h = self.seq_model(self.embedding(x), h)
        logits = self.linear(ops.reshape(out, (T * B, out.shape[2])))
        return logits, h
