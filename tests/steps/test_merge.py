import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgetune import merge
from edgetune.errors import EdgetuneError
from edgetune.runs import RunFolder


def test_merge_matches_peft_merge_and_unload(trained_run, tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, run = trained_run
    out = merge.merge(str(tiny_base), run / "adapter", tmp_path / "merged")
    ours = load_file(str(out / "model.safetensors"))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_base)), str(run / "adapter"))
    ref = peft_model.merge_and_unload().state_dict()
    changed = 0
    for name, tensor in ours.items():
        assert torch.allclose(tensor, ref[name], atol=1e-6), name
        changed += not torch.equal(tensor, load_file(str(tiny_base / "model.safetensors"))[name])
    assert changed >= 7  # every targeted projection of both layers moved
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).is_file()
    # The template and stop ids training used travel with the adapter into the merged folder.
    for name in ("chat_template.jinja", "generation_config.json"):
        assert (out / name).read_text() == (run / "adapter" / name).read_text()


def test_merge_works_shard_by_shard(trained_run, tiny_base, tmp_path):
    """A base saved in several shards merges shard by shard to the same tensors."""
    from transformers import AutoModelForCausalLM

    _, run = trained_run
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(tiny_base)).save_pretrained(sharded, max_shard_size="100KB")
    for f in tiny_base.glob("tokenizer*"):
        shutil.copy(f, sharded / f.name)
    assert len(list(sharded.glob("*.safetensors"))) > 2
    a = merge.merge(str(sharded), run / "adapter", tmp_path / "m1")
    b = merge.merge(str(tiny_base), run / "adapter", tmp_path / "m2")
    merged_a = {k: v for f in a.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    merged_b = load_file(str(b / "model.safetensors"))
    assert merged_a.keys() == merged_b.keys()
    assert all(torch.equal(merged_a[k], merged_b[k]) for k in merged_a)
    assert (a / "model.safetensors.index.json").is_file()


def test_merge_rejects_an_adapter_for_another_base(trained_run, tmp_path):
    _, run = trained_run
    adapter = tmp_path / "adapter"
    shutil.copytree(run / "adapter", adapter)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 3)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(EdgetuneError, match="does not match the base weight"):
        merge.merge(RunFolder(run).train_result().base_path, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    renamed = {k.replace("layers.0.", "layers.9."): v for k, v in tensors.items()}
    save_file(renamed, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(EdgetuneError, match="have no base weight"):
        merge.merge(RunFolder(run).train_result().base_path, adapter, tmp_path / "out")

    (adapter / "adapter_config.json").unlink()
    with pytest.raises(EdgetuneError, match="no adapter_config.json"):
        merge.LoraDeltas(adapter)
