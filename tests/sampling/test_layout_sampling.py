"""`sample --task layout`: the --layout parser (JSON objects by class id or name, test:INDEX) and
its one-line errors, and a random tiny layout model whose samples change with the layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ldm_jax.data import fashion_mnist_idx, fashion_mnist_layout
from ldm_jax.sampling import layout_input, tasks
from ldm_jax.sampling.request import SampleInputError, SampleRequest
from tests.sampling import tiny_models

NAMES = fashion_mnist_idx.CLASS_NAMES


def _parse(objects, max_objects=4):
    return layout_input.parse_objects(objects, 10, max_objects, NAMES)


def test_objects_by_id_or_name_and_padded_batches():
    layout = _parse(
        [{"class": "ankle BOOT", "box": [0, 0.1, 0.5, 0.6]}, {"class": 3, "box": [0.5, 0, 1, 1]}]
    )
    assert layout.classes.tolist() == [9, 3] and layout.num_objects == 2
    np.testing.assert_allclose(layout.boxes, [[0, 0.1, 0.5, 0.6], [0.5, 0, 1, 1]])
    classes, boxes, num = layout.batch(3, 4, pad_class=10)
    assert classes.tolist() == [[9, 3, 10, 10]] * 3 and num.tolist() == [2, 2, 2]
    assert boxes.shape == (3, 4, 4) and not boxes[:, 2:].any()
    assert layout.to_json(NAMES)[0] == {"class": "Ankle boot", "box": [0.0, 0.1, 0.5, 0.6]}
    assert _parse([]).num_objects == 0  # the empty layout (the unconditional branch)


@pytest.mark.parametrize(
    "objects, message",
    [
        ({"class": 1}, "expected a JSON list"),
        ([{"class": 1, "box": [0, 0, 1.2, 1]}], r"object 0: box .* outside \[0, 1\]"),
        ([{"class": 1, "box": [0.5, 0, 0.5, 1]}], "x0 < x1 and y0 < y1"),
        ([{"class": 1, "box": [0, 0, 1]}], "must be 4 numbers"),
        ([{"class": "sock", "box": [0, 0, 1, 1]}], "unknown class name 'sock' .*'Sneaker'"),
        ([{"class": 10, "box": [0, 0, 1, 1]}], r"class 10 is not in \[0, 10\)"),
        ([{"class": 1, "box": [0, 0, 1, 1], "size": 2}], 'exactly the keys "class" and "box"'),
        ([{"class": 1, "box": [0, 0, 1, 1]}] * 5, "5 objects, but this model holds at most 4"),
    ],
)
def test_invalid_layouts_are_one_line_errors_naming_the_flag(objects, message):
    with pytest.raises(SampleInputError, match="^--layout: .*" + message) as err:
        _parse(objects)
    assert "\n" not in str(err.value)


def test_files_and_test_canvases(tmp_path):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps([{"class": "bag", "box": [0.25, 0.25, 0.75, 0.75]}]))
    assert layout_input.read_layout(str(path), 10, 4, NAMES).classes.tolist() == [8]
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(SampleInputError, match="^--layout: .*bad.json is not valid JSON"):
        layout_input.read_layout(str(tmp_path / "bad.json"), 10, 4, NAMES)
    with pytest.raises(SampleInputError, match="^--layout: .*missing.json is not a file"):
        layout_input.read_layout(str(tmp_path / "missing.json"), 10, 4, NAMES)
    source = fashion_mnist_layout.FashionMnistLayout("test[:5]", canvas_size=32)
    kw = dict(test_example=source.__getitem__, num_test=len(source))
    canvas = layout_input.read_layout("test:2", 10, 4, NAMES, **kw)
    n = source[2]["num_objects"]
    assert canvas.classes.tolist() == source[2]["classes"][:n].tolist()
    np.testing.assert_array_equal(canvas.boxes, source[2]["boxes"][:n])
    with pytest.raises(SampleInputError, match=r"^--layout: 'test:5': .*\[0, 5\)"):
        layout_input.read_layout("test:5", 10, 4, NAMES, **kw)


def test_layout_changes_the_samples_of_a_random_tiny_model(tmp_path):
    model = tiny_models.random_model(tiny_models.tiny_config("tasks/fashion_mnist/layout2img.py"))
    assert tasks.workdir_task(model.config) == "layout"
    outputs = []
    for name, box in (("sneaker", [0, 0, 0.5, 0.5]), ("trouser", [0.4, 0.2, 1, 1])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([{"class": name, "box": box}]))
        request = SampleRequest(task="layout", num=1, layout=str(path), steps=2, seed=0)
        result = tasks.run(model, request)
        assert result.images.shape == (1, 32, 32, 3) and result.info["layout"][0]["box"] == box
        outputs.append(result.images)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3
    for request, message in (
        (SampleRequest(task="layout", num=1), "--task layout needs --layout"),
        (SampleRequest(task="layout", num=1, layout="x.json", prompt="a"), "--prompt does not"),
        (SampleRequest(task="generate", num=1, layout="x.json"), "holds a layout model"),
    ):
        with pytest.raises(SampleInputError, match=message):
            tasks.run(model, request)
