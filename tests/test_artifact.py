"""Model directories: exact round trip, no pickle, clear errors on mismatched cards."""

import json

import numpy as np
import pytest
import torch

from sbicluster.artifact import load_model, save_model
from sbicluster.errors import ModelError, OutputExistsError
from sbicluster.inference import predict
from sbicluster.model import ClusterModel, default_architecture
from simulators.toy import LinearGaussianToy


@pytest.fixture()
def saved(tmp_path):
    toy = LinearGaussianToy()
    torch.manual_seed(0)
    model = ClusterModel(
        toy.prior,
        toy.bands,
        toy.observation_shape,
        default_architecture("small", 2, [0.7, 1.3]),
        card={"simulator": toy.card()},
    ).eval()
    # make BatchNorm running statistics non-trivial so that they must round-trip too
    model.train()
    with torch.no_grad():
        model.embed(toy.simulate(64, torch.Generator().manual_seed(1)).images)
    model.eval()
    path = save_model(model, tmp_path / "model")
    return toy, model, path


def test_round_trip_gives_identical_samples(saved):
    toy, model, path = saved
    loaded = load_model(path)
    x = toy.simulate(20, torch.Generator().manual_seed(2)).images
    a = predict(
        model, x, num_samples=200, generator=torch.Generator().manual_seed(3), progress=False
    )
    b = predict(
        loaded, x, num_samples=200, generator=torch.Generator().manual_seed(3), progress=False
    )
    assert np.array_equal(a.samples, b.samples)
    assert np.array_equal(a.p_cluster, b.p_cluster)
    assert np.array_equal(a.visibility, b.visibility)
    assert loaded.bands == model.bands and loaded.image_shape == model.image_shape
    assert loaded.prior == model.prior


def test_directory_holds_only_safetensors_and_json(saved):
    _, _, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "weights.safetensors"]
    card = json.loads((path / "card.json").read_text())
    for key in (
        "format_version",
        "bands",
        "image_shape",
        "prior",
        "simulator",
        "normalisation",
        "architecture",
        "software",
    ):
        assert key in card
    assert card["normalisation"]["softening_e_per_s"] == pytest.approx([0.7, 1.3])


def test_card_that_does_not_match_weights_is_refused(saved):
    _, _, path = saved
    card = json.loads((path / "card.json").read_text())
    card["architecture"]["embedding"]["width"] = 32
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match"):
        load_model(path)


def test_other_sbi_version_or_newer_format_is_refused(saved):
    _, _, path = saved
    card = json.loads((path / "card.json").read_text())
    (path / "card.json").write_text(
        json.dumps({**card, "software": {**card["software"], "sbi": "0.1.0"}})
    )
    with pytest.raises(ModelError, match="sbi"):
        load_model(path)
    (path / "card.json").write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(ModelError, match="newer"):
        load_model(path)


def test_missing_or_corrupt_files(saved, tmp_path):
    _, model, path = saved
    with pytest.raises(ModelError, match="nowhere does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="lacks card.json"):
        load_model(tmp_path / "empty")
    (path / "weights.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(path)


def test_existing_directory_is_not_overwritten_silently(saved):
    _, model, path = saved
    before = (path / "weights.safetensors").read_bytes()
    with pytest.raises(OutputExistsError):
        save_model(model, path)
    assert (path / "weights.safetensors").read_bytes() == before
    save_model(model, path, overwrite=True)
    assert load_model(path).card["format_version"] == 1


def test_card_records_zuko_and_another_zuko_major_is_refused(saved):
    import zuko

    _, _, path = saved
    card = json.loads((path / "card.json").read_text())
    assert card["software"]["zuko"] == zuko.__version__
    major = int(zuko.__version__.split(".")[0])
    other_minor = {**card["software"], "zuko": f"{major}.999.0"}
    (path / "card.json").write_text(json.dumps({**card, "software": other_minor}))
    assert load_model(path).card["software"]["zuko"] == f"{major}.999.0"
    other_major = {**card["software"], "zuko": f"{major + 1}.0.0"}
    (path / "card.json").write_text(json.dumps({**card, "software": other_major}))
    with pytest.raises(ModelError, match=rf"zuko {major + 1}\.0\.0 .*pip install zuko=="):
        load_model(path)


def test_model_directory_and_files_get_the_umask_permissions(tmp_path):
    import os

    toy = LinearGaussianToy()
    model = ClusterModel(
        toy.prior, toy.bands, toy.observation_shape, default_architecture("small", 2, [1.0, 1.0])
    )
    old = os.umask(0o022)
    try:
        path = save_model(model, tmp_path / "model")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert (path / "card.json").stat().st_mode & 0o777 == 0o644
    assert (path / "weights.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize(
    "card, message",
    [
        (42, "holds a JSON int, not an object"),
        ("use-the-card-of-the-saved-model", "format_version 'one' is not an integer"),
    ],
    ids=["not-an-object", "text-format-version"],
)
def test_card_of_the_wrong_shape_is_refused(saved, card, message):
    _, _, path = saved
    if isinstance(card, str):
        card = {**json.loads((path / "card.json").read_text()), "format_version": "one"}
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value)
