import pytest
import torch

from frosty_lm.corpus import CharTokenizer


def test_round_trip_and_sorted_vocabulary():
    text = "Whose woods these are I think I know.\n"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == "".join(sorted(set(text)))
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(torch.tensor(tok.encode(text))) == text


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    assert tok.unknown("abxcyx") == ["x", "y"]
    with pytest.raises(ValueError, match="'x', 'y'"):
        tok.encode("abxcyx")


def test_compact_tensor():
    tok = CharTokenizer.from_text("hello")
    assert tok.encode_tensor("hello").dtype == torch.uint8
    wide = CharTokenizer("".join(chr(0x4E00 + i) for i in range(300)))
    assert wide.encode_tensor(wide.chars).dtype == torch.int32
    assert wide.decode(wide.encode_tensor(wide.chars)) == wide.chars
