"""Shared fixtures: the real ZNSM-iDB fields (skipped visibly when ../shared is absent) and synthetic ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from training.data.synthetic import SyntheticField, synthetic_field
from training.paths import UFAM_DDS1, ZNSM_MS2


@pytest.fixture(scope="session")
def znsm_ms2() -> Path:
    """The shared real data set; skips the test, saying why, when it is not beside the checkout."""
    if not (ZNSM_MS2 / "images").is_dir():
        pytest.skip(f"real data not available: {ZNSM_MS2} is missing (tests on real fields need ../shared/data)")
    return ZNSM_MS2


@pytest.fixture(scope="session")
def ufam_dds1() -> Path:
    """Another lab's shared fields (UFAM DDS1); skips the test, saying why, when they are not beside the checkout."""
    if not (UFAM_DDS1 / "negatives").is_dir():
        pytest.skip(f"real data not available: {UFAM_DDS1} is missing (tests on real fields need ../shared/data)")
    return UFAM_DDS1


@pytest.fixture(scope="session")
def synthetic_fields() -> list[SyntheticField]:
    """Three small synthetic fields, one per background colour."""
    return [
        synthetic_field(seed, background=bg, field_id=str(seed))
        for seed, bg in ((1, "pink"), (2, "blue"), (3, "green"))
    ]


@pytest.fixture(scope="session")
def random_patch_cnn():
    """The paper's patch CNN with seeded random weights (biases too, so no output is trivially zero)."""
    import numpy as np

    from training.data.sampling import extract_patches
    from training.model.patch_cnn import build_patch_cnn, to_model_input

    model = build_patch_cnn(seed=3)
    rng = np.random.default_rng(3)
    model.set_weights([w if w.ndim > 1 else rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    # Spread the two logits and centre them on a synthetic field, so both classes occur and argmax means something.
    conv4 = model.get_layer("conv4")
    kernel, bias = conv4.get_weights()
    conv4.set_weights([kernel * 100, bias])
    field = synthetic_field(11, height=150, width=170, background="green").image
    ys, xs = np.mgrid[0:150:5, 0:170:5]
    p = model.predict(to_model_input(extract_patches(field, np.stack([ys.ravel(), xs.ravel()], 1))), verbose=0)
    bias[1] -= np.median(np.log(p[:, 1]) - np.log(p[:, 0]))
    conv4.set_weights([kernel * 100, bias])
    return model


@pytest.fixture(scope="session")
def random_dense_onnx(random_patch_cnn, tmp_path_factory) -> Path:
    """The random-weight patch CNN exported as the dense ONNX model, with full metadata."""
    from training.model.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "random.onnx"
    export_onnx(random_patch_cnn, path, recipe="random", training_data="none", validation_metrics={"loss": 0.0})
    return path


@pytest.fixture(scope="session")
def other_dense_onnx(random_patch_cnn, tmp_path_factory) -> Callable[[float], Path]:
    """Dense ONNX models unlike the random one: its weights with conv4's bias shifted by ``shift`` (another
    model_id, other outputs), exported once per shift."""
    import keras
    import numpy as np

    from training.model.export import export_onnx

    made: dict[float, Path] = {}

    def make(shift: float) -> Path:
        if shift not in made:
            model = keras.models.clone_model(random_patch_cnn)
            model.set_weights(random_patch_cnn.get_weights())
            kernel, bias = model.get_layer("conv4").get_weights()
            model.get_layer("conv4").set_weights([kernel, bias + np.asarray([0.0, shift], dtype=bias.dtype)])
            path = tmp_path_factory.mktemp("onnx") / f"other-{shift}.onnx"
            export_onnx(model, path, recipe="other", training_data="none", validation_metrics={"loss": 0.0})
            made[shift] = path
        return made[shift]

    return make


@pytest.fixture(scope="session")
def random_object_filter(random_dense_onnx, tmp_path_factory) -> Path:
    """A real object filter (scikit-learn forest exported to ONNX by the training code) for the random model.

    The random model's candidates on synthetic fields are labelled by a rule (elongation above the median is a
    "bacillus"), so both classes exist whatever the random weights find; the filter then learns that rule.
    """
    import numpy as np

    from service.engine.candidates import FEATURES, find_candidates
    from service.engine.model import OnnxModel
    from service.engine.segmenter import Segmenter
    from training.objects.classifier import export_filter, fit_filter
    from training.objects.samples import ObjectSamples

    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    segmenter = Segmenter(model, tile_px=128)
    features, fields = [], []
    for seed in range(8):
        image = synthetic_field(100 + seed, height=140, width=180, background=("pink", "blue", "green")[seed % 3]).image
        candidates = find_candidates(segmenter.heatmap(image), image, 0.5, 20)
        features += [c.features for c in candidates.items]
        fields += [str(seed)] * len(candidates.items)
    matrix = np.stack(features)
    elongation = matrix[:, FEATURES.index("elongation")]
    labels = (elongation > np.median(elongation)).astype(np.int8)
    samples = ObjectSamples(matrix, labels, np.asarray(fields), labels.astype(bool))
    fit = fit_filter(samples, target_recall=0.9)
    path = tmp_path_factory.mktemp("filter") / "object_filter.onnx"
    export_filter(
        fit,
        path,
        dense_model_id=model.meta.model_id,
        candidate_threshold=0.5,
        min_object_px=20,
        trained_on="synthetic fields, labels by an elongation rule (tests)",
    )
    return path


def install_model(
    models: Path, dense: Path, object_filter: Path | None = None, card: str | None = None, name: str | None = None
) -> Path:
    """Make a model folder ``models/<name>/`` holding ``dense`` (and ``object_filter``, ``card``) under the names
    the service reads (links, not copies); returns ``models``."""
    from service.engine.model_folder import CARD_MD, DENSE_ONNX, OBJECT_FILTER_ONNX

    folder = models / (name or dense.stem)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DENSE_ONNX).symlink_to(dense.resolve())
    if object_filter is not None:
        (folder / OBJECT_FILTER_ONNX).symlink_to(object_filter.resolve())
    if card is not None:
        (folder / CARD_MD).write_text(card)
    return models


def redness_patch_cnn(dimmer: float = 0.0):
    """The paper's patch CNN with hand-set weights that see red: P(bacillus) rises with the red-minus-green of
    about the 20 px around a pixel (conv3 reads only its 2×2 central taps), above 0.5 where that mean exceeds 0.15
    (plus ``dimmer``). A red rod on a pale field becomes one compact object, as a trained model's bacillus does."""

    from training.model.patch_cnn import build_patch_cnn

    model = build_patch_cnn(l2=0.0)
    for layer in ("conv1", "conv2", "conv3", "conv4"):
        kernel, bias = model.get_layer(layer).get_weights()
        kernel[:], bias[:] = 0.0, 0.0
        if layer == "conv1":
            kernel[:, :, 0, 0], kernel[:, :, 1, 0], bias[0] = 1 / 16, -1 / 16, -0.1
        elif layer == "conv2":
            kernel[:, :, 0, 0] = 1 / 16
        elif layer == "conv3":
            kernel[2:4, 2:4, 0, 0] = 1 / 4
        else:
            kernel[0, 0, 0, 1], bias[1] = 30.0, -30.0 * (0.15 + dimmer)
        model.get_layer(layer).set_weights([kernel, bias])
    return model


def fast_model_folder(folder: Path, patch_model, fields: list) -> Path:
    """A servable model folder made by the training code from ``patch_model``: the dense ONNX, the patch CNN and
    the fast-mode networks (coarse pass and int8 copies, calibrated on ``fields``)."""
    from service.engine.model_folder import DENSE_ONNX, PATCH_KERAS
    from training.model.export import export_onnx
    from training.model.fast_variants import write_fast_variants

    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(patch_model, folder / DENSE_ONNX, recipe="redness", training_data="none", validation_metrics={})
    patch_model.save(folder / PATCH_KERAS)
    write_fast_variants(
        folder, fields, fields, calibration_source="test fields", check_source="the same", windows_per_field=4
    )
    return folder


def red_rod_field(start: tuple[int, int], length: int, size: tuple[int, int] = (256, 256)):
    """A pale field with one red rod, 4 px thick, running diagonally from ``start`` (y, x) for ``length`` px."""
    import numpy as np

    field = np.empty((*size, 3), dtype=np.uint8)
    field[:] = (232, 226, 230)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    along = ((y - start[0]) + (x - start[1])) / 2
    across = np.abs((y - start[0]) - (x - start[1])) / np.sqrt(2)
    field[(along >= 0) & (along <= length / np.sqrt(2)) & (across <= 2)] = (200, 40, 80)
    return field


@pytest.fixture(scope="session")
def red_fast_folder(tmp_path_factory) -> Path:
    """A model folder of the red-seeing network with its fast-mode networks."""
    fields = [red_rod_field((40 + 30 * k, 60 + 20 * k), 30) for k in range(3)]
    return fast_model_folder(tmp_path_factory.mktemp("red-model") / "red", redness_patch_cnn(), fields)
