"""Train the caption tokenizer (WordPiece, lower-case) and save it in the `tokenizers` format.

The runtime loads the resulting `tokenizer.json` with the `tokenizers` library alone; the special
tokens' ids are written into the bundle's manifest so the decoding loop never guesses them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def default_tokenizer() -> Tokenizer:
    """The tokenizer of the built-in taxonomy (deterministic: same corpus, same vocabulary)."""
    from h2a.export_tools.captions import corpus

    return train_tokenizer(corpus())
