"""Where generation stops: the HF side stops wherever llama.cpp stops in the run's GGUF, so answers
and 'stops at EOS' mean the same on both sides (and in the Modelfile)."""
from transformers import AutoTokenizer

from edgetune.convert.hf_to_gguf import convert_hf_to_gguf
from edgetune.measure import gguf_eval, hf_eval
from edgetune.steps.report import modelfile


def test_hf_stops_where_llama_cpp_stops(tiny_base, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    gguf = convert_hf_to_gguf(tiny_base, tmp_path / "tiny-F16.gguf", "f16")
    im_end, endoftext = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    # The demo vocabulary ends chat turns with <|im_end|>; llama.cpp also ends generation on <|endoftext|>.
    assert hf_eval.folder_stop_ids(tiny_base, tok) == [im_end]
    assert set(gguf_eval.eog_ids(gguf)) == {im_end, endoftext}
    stops = hf_eval.folder_stop_ids(tiny_base, tok, gguf)
    assert stops == [im_end, endoftext]
    text = modelfile(gguf.name, tok, stops)
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text
