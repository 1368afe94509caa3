"""Character vocabulary: the sorted distinct characters of a corpus, one id each."""
from __future__ import annotations

import torch


class CharTokenizer:
    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars = chars  # stored in checkpoints as this plain string
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of text that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.stoi))

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(repr(ch) for ch in missing)
            raise ValueError(f"characters not in the vocabulary: {shown}; use only characters of the training corpus")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def encode_tensor(self, text: str) -> torch.Tensor:
        """The whole text as one compact tensor: uint8 when the vocabulary fits a byte (through str.translate, a
        byte a character, rather than a Python list of ints, many times larger), else int32."""
        if len(self) > 256:
            return torch.tensor(self.encode(text), dtype=torch.int32)
        missing = set(text) - self.stoi.keys()
        if missing:
            self.encode("".join(sorted(missing)))  # the same error as encode()
        ids = text.translate({ord(ch): i for i, ch in enumerate(self.chars)}).encode("latin-1")
        return torch.frombuffer(bytearray(ids), dtype=torch.uint8)
