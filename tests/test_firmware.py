"""The device front as integer C: lowering, the numpy golden model, generation, host and Cortex-M7 builds.

Run by `make test-firmware` (marker `firmware`), which installs gcc-arm-none-eabi, newlib and
qemu-system-arm when missing and root. Every committed bundle is checked bit for bit: the host build on
its whole test split, the Cortex-M7 build on 200 inputs under QEMU.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the firmware generator reads ONNX files: needs the firmware extra")

from agilenn.bundle import Bundle
from agilenn.datasets import load_dataset
from firmware.build import WARNINGS, build
from firmware.checks import check
from firmware.codegen import FrontTooLargeError, generate
from firmware.evaluation import evaluate_integer
from firmware.integer_front import UnsupportedFrontError, lower_front
from firmware.reference import run_reference
from firmware.run import run_build
from firmware.targets import Target

pytestmark = pytest.mark.firmware

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ["fashion-mnist", "cluttered-fashion-mnist"]
ARM_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
needs_arm = pytest.mark.skipif(any(shutil.which(t) is None for t in ARM_TOOLS),
                               reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm "
                                      "(make firmware-tools)")


def _bundle(name: str) -> Bundle:
    return Bundle(ROOT / "bundles" / name)


def _identical(records, reference) -> tuple[int, int]:
    payloads = sum(r.payload == p for r, p in zip(records, reference.payloads))
    logits = sum(np.array_equal(r.local_logits, l) for r, l in zip(records, reference.local_logits))
    return payloads, logits


@pytest.mark.parametrize("name", BUNDLES)
def test_integer_front_keeps_the_float_fronts_accuracy(name):
    bundle = _bundle(name)
    report = evaluate_integer(bundle, load_dataset(name).test)
    assert report["samples"] == 10_000
    assert report["integer_accuracy_drop"] <= 0.003
    assert report["integer_local_only_accuracy_drop"] <= 0.005
    assert report["integer_remote_indices_equal_share"] >= 0.99


def test_integer_front_is_integer_only():
    front = lower_front(_bundle("cluttered-fashion-mnist"))
    for op in front.ops:
        for field in ("weights", "bias", "table", "thresholds"):
            value = getattr(op, field, None)
            if value is not None:
                assert np.issubdtype(np.asarray(value).dtype, np.integer), (op.name, field)
        requant = getattr(op, "requant", None)
        if requant is not None:
            assert requant.multiplier.dtype == np.int64 and requant.multiplier.max() < 2 ** 31
            assert requant.multiplier.min() >= 2 ** 30


@pytest.mark.parametrize("name", BUNDLES)
def test_host_build_is_bit_exact_on_every_test_input(name, tmp_path):
    bundle = _bundle(name)
    record = generate(bundle, tmp_path / "src")
    built = build("host", tmp_path / "src", tmp_path / "host")
    images = load_dataset(name).test.images
    records = run_build(built, images, record["classes"], len(record["layers"])).records
    reference = run_reference(lower_front(bundle), bundle, images)
    assert _identical(records, reference) == (len(images), len(images))


@needs_arm
@pytest.mark.parametrize("name", BUNDLES)
def test_cortex_m7_build_is_bit_exact_under_qemu(name):
    report = check(_bundle(name), "cortex-m7", limit=200)
    assert report["samples"] == 200
    assert report["payloads_identical"] == 200
    assert report["local_logits_identical"] == 200
    assert report["flash_bytes"] <= report["flash_budget_bytes"]
    assert report["sram_bytes"] <= report["sram_budget_bytes"]
    assert 0 < report["stack_peak_bytes"] < 4096
    layer_sum = sum(layer["instructions_mean"] for layer in report["layers"])
    assert layer_sum == pytest.approx(report["instructions_per_inference_mean"])
    if name == "cluttered-fashion-mnist":
        assert report["flash_bytes"] <= 256 * 1024
        assert report["sram_bytes"] <= 128 * 1024
        # instruction counts are exact and repeat (QEMU -icount): CMSIS-NN class kernels, whole front
        assert report["macs_per_instruction"] >= 0.5


@pytest.fixture(scope="module", params=["range-v1", "range-v2"])
def tiny_int8_bundle(request, tmp_path_factory):
    """A tiny bundle with an int8 front, coded per channel (range-v1) or per channel and position (range-v2)."""
    pytest.importorskip("torch", reason="trains a bundle: needs the train extra")
    from partitioner.testing import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("firmware-tiny") / "bundle",
                              export={"verify_samples": 64, "int8": True, "int8_max_accuracy_drop": 0.05,
                                      "codec": request.param})
    assert bundle.codec.codec_id == request.param
    return bundle


@pytest.mark.parametrize("target", ["host", pytest.param("cortex-m7", marks=needs_arm)])
def test_tiny_bundle_builds_bit_exact(tiny_int8_bundle, target, tmp_path):
    from partitioner.testing import synthetic_dataset

    images = synthetic_dataset().test.images
    record = generate(tiny_int8_bundle, tmp_path / "src")
    built = build(target, tmp_path / "src", tmp_path / target)
    result = run_build(built, images, record["classes"], len(record["layers"]))
    reference = run_reference(lower_front(tiny_int8_bundle), tiny_int8_bundle, images)
    assert _identical(result.records, reference) == (len(images), len(images))


@needs_arm
def test_instruction_counts_repeat_exactly(tmp_path):
    bundle = _bundle("fashion-mnist")
    record = generate(bundle, tmp_path / "src")
    built = build("cortex-m7", tmp_path / "src", tmp_path / "m7")
    images = load_dataset("fashion-mnist").test.images[:3]
    first = run_build(built, images, record["classes"], len(record["layers"])).records
    second = run_build(built, images, record["classes"], len(record["layers"])).records
    assert [r.layer_instructions for r in first] == [r.layer_instructions for r in second]
    assert all(r.instructions > record["macs"] / 4 for r in first)


@pytest.mark.parametrize("compiler", ["gcc", pytest.param("arm-none-eabi-gcc", marks=needs_arm)])
def test_generated_c_compiles_without_warnings(compiler, tmp_path):
    generate(_bundle("cluttered-fashion-mnist"), tmp_path)
    extra = ["-mcpu=cortex-m7", "-mthumb", "-O2"] if compiler.startswith("arm") else ["-O2"]
    for source in ("agilenn_front.c", "agilenn_range_coder.c"):
        result = subprocess.run([compiler, *WARNINGS, *extra, "-c", str(tmp_path / source), "-o",
                                 str(tmp_path / (source + ".o"))], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""


def test_generated_front_uses_no_float_no_malloc_and_only_string_h(tmp_path):
    generate(_bundle("cluttered-fashion-mnist"), tmp_path)
    sources = {name: (tmp_path / name).read_text() for name in
               ("agilenn_front.c", "agilenn_front.h", "agilenn_model.h", "agilenn_kernels.h",
                "agilenn_range_coder.h", "agilenn_range_coder.c")}
    code = re.sub(r"/\*.*?\*/", "", "\n".join(sources.values()), flags=re.DOTALL)
    for word in ("float", "double", "malloc", "calloc", "free"):
        assert not re.search(rf"\b{word}\b", code), word
    includes = {line.split()[1] for line in code.splitlines() if line.startswith("#include")}
    assert includes <= {"<stdint.h>", "<string.h>", "<arm_acle.h>", '"agilenn_front.h"', '"agilenn_kernels.h"',
                        '"agilenn_range_coder.h"', '"agilenn_model.h"'}
    assert "static const int16_t node_conv_81_weights" in sources["agilenn_model.h"]
    assert "static const agilenn_channel_t node_conv_81_channels[24]" in sources["agilenn_model.h"]
    assert "int agilenn_front_run(const uint8_t *input, uint8_t *payload_out, uint32_t *payload_len, " \
           "uint8_t *local_logits_out);" in sources["agilenn_front.h"]


def test_unsupported_op_is_refused_with_the_nodes_name(tmp_path):
    import onnx
    from onnx import helper

    source = _bundle("fashion-mnist")
    folder = tmp_path / "bundle"
    shutil.copytree(source.folder, folder)
    model = onnx.load(str(folder / "device.int8.onnx"))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    sigmoid = helper.make_node("Sigmoid", [conv.output[0]], ["squashed"], name="odd_sigmoid")
    for node in model.graph.node:
        node.input[:] = ["squashed" if name == conv.output[0] else name for name in node.input]
    index = list(model.graph.node).index(conv)
    model.graph.node.insert(index + 1, sigmoid)
    onnx.save(model, str(folder / "device.int8.onnx"))
    with pytest.raises(UnsupportedFrontError, match="node 'odd_sigmoid' \\(Sigmoid\\): op Sigmoid has no integer"):
        generate(Bundle(folder, verify=False), tmp_path / "src")


def test_front_too_large_for_the_target_is_refused_with_both_figures(tmp_path):
    small = Target("small-mcu", flash_bytes=64 * 1024, sram_bytes=16 * 1024, description="a smaller board")
    with pytest.raises(FrontTooLargeError, match=r"flash: \d+ bytes .* exceed the target's 65536.*"
                                                 r"SRAM: \d+ bytes of arena \+ \d+ of payload buffer exceed "
                                                 r"the target's 16384"):
        generate(_bundle("cluttered-fashion-mnist"), tmp_path, small)
    assert not (tmp_path / "agilenn_front.c").exists()


def test_firmware_run_writes_one_json_line_per_input(tmp_path):
    from commands.cli import main

    images = load_dataset("fashion-mnist").test.images[:5]
    np.save(tmp_path / "x.npy", images)
    sink = tmp_path / "out.jsonl"
    assert main(["firmware", "run", "--bundle", str(ROOT / "bundles/fashion-mnist"), "--target", "host",
                 "--source", str(tmp_path / "x.npy"), "--sink", str(sink)]) == 0
    lines = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(5))
    bundle = _bundle("fashion-mnist")
    reference = run_reference(lower_front(bundle), bundle, images)
    for line, payload, logits in zip(lines, reference.payloads, reference.local_logits):
        assert bytes.fromhex(line["payload"]) == payload
        assert line["local_logits"] == logits.tolist()
        assert line["local_label"] == int(np.argmax(logits))
        assert set(line) == {"index", "payload", "local_logits", "local_label", "instructions"}


def test_firmware_run_refuses_a_source_of_the_wrong_shape(tmp_path, capsys):
    from commands.cli import main

    np.save(tmp_path / "x.npy", np.zeros((2, 20, 20), dtype=np.uint8))
    code = main(["firmware", "run", "--bundle", str(ROOT / "bundles/fashion-mnist"), "--target", "host",
                 "--source", str(tmp_path / "x.npy"), "--sink", str(tmp_path / "out.jsonl")])
    assert code == 1
    assert "the bundle takes samples shaped (1, 28, 28)" in capsys.readouterr().err


def test_firmware_check_json_counts_identical_outputs(capsys):
    from commands.cli import main

    assert main(["firmware", "check", "--bundle", str(ROOT / "bundles/fashion-mnist"), "--target", "host",
                 "--limit", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["payloads_identical"] == report["local_logits_identical"] == report["samples"] == 100
    assert report["target"] == "host"


def test_evaluate_reports_the_integer_precision(capsys):
    from commands.cli import main

    assert main(["evaluate", str(ROOT / "bundles/fashion-mnist"), "--limit", "200", "--no-skewness",
                 "--precision", "integer", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("accuracy_integer", "accuracy_local_only_integer", "integer_remote_indices_equal_share",
                "integer_accuracy_drop", "payload_bytes_median_integer"):
        assert key in report
