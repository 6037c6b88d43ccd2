"""The caption tokenizer at run time: the `tokenizers` library on the bundle's tokenizer.json."""

from __future__ import annotations

from h2a.runtime.errors import BundleError


class CaptionTokenizer:
    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # the library raises a plain Exception on bad JSON
            raise BundleError(f"tokenizer.json cannot be loaded ({err})") from None
        self._tok.no_padding()
        self._tok.no_truncation()

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def token_id(self, token: str) -> int:
        index = self._tok.token_to_id(token)
        if index is None:
            raise BundleError(f"tokenizer.json has no token {token!r}")
        return int(index)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))
