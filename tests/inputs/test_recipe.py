import pytest

from edgetune import recipe
from edgetune.errors import EdgetuneError


def test_defaults_are_the_seed_recipe():
    r = recipe.Recipe()
    t = r.train
    assert (t.rank, t.alpha, t.dropout, t.lr, t.scheduler) == (16, 32, 0.05, 2e-4, "cosine")
    assert (t.warmup_ratio, t.weight_decay, t.max_grad_norm, t.epochs) == (0.03, 0.01, 0.3, 3.0)
    assert t.batch_size * t.grad_accum == 16
    assert recipe.target_modules("attn") == ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "in_proj_qkv",
                                             "in_proj_z", "out_proj"]


def test_demo_recipe_loads_and_round_trips(tmp_path):
    r = recipe.load("recipes/demo.yaml")
    assert r.name == "demo" and r.export.quants == ["Q8_0", "Q4_K_M"]
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    assert recipe.load(path) == r


@pytest.mark.parametrize("text,message", [
    ("nmae: x\n", "r.yaml.nmae: unknown key"),
    ("train: {rnak: 4}\n", "r.yaml.train.rnak: unknown key"),
    ("train: {rank: four}\n", "r.yaml.train.rank: expected a whole number"),
    ("train: {rank: 0}\n", "train.rank 0 must be at least 1"),
    ("train: {lr: -1}\n", "train.lr -1.0 must be in (0, 1)"),
    ("train: {method: magic}\n", "train.method 'magic'"),
    ("train: {gradient_checkpointing: maybe}\n", "must be auto, true or false"),
    ("export: {quants: [Q9_X]}\n", "export.quants 'Q9_X'"),
    ("name: ../escape\n", "name '../escape' must be letters"),
    ("data: [1, 2]\n", "r.yaml.data: expected a mapping"),
    ("train: {rank: 4\n", "r.yaml:2: not valid YAML"),
])
def test_bad_recipes_name_the_field(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(EdgetuneError) as e:
        recipe.load(path)
    assert message in str(e.value)
