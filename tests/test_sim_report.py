"""End to end on a small run: tiny bundle and baselines -> measured schemes -> simulate, report, recommend."""

import json

import pytest

from agilenn.measured import load_measured
from simulation import compare
from simulation.cli import main as simulate_main
from simulation.profiles import load_device, load_link


@pytest.fixture(scope="module")
def measured_file(trained_tiny_bundle, tmp_path_factory):
    tiny_bundle = trained_tiny_bundle  # fine-tuned from and measured through its torch weights
    import torch

    from agilenn.measured import write_measured
    from partitioner.baselines import BaselineConfig, train_and_export
    from partitioner.simdata import build
    from partitioner.testing import synthetic_dataset

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("baselines")
    dataset = synthetic_dataset()
    common = {"dataset": "synthetic", "mean": 0.2, "std": 0.3, "augment": {"max_shift_px": 1, "horizontal_flip": False},
                  "training": {"epochs": 1, "batch_size": 32, "lr": 0.05}}
    train_and_export(BaselineConfig(name="local-tiny", kind="local-only", network=[
        {"name": "separable-extractor", "args": {"out_channels": 6, "width": 8}},
        {"name": "mlp-head", "args": {"hidden": 16}}], **common), folder / "local-tiny", folder / "runs-a", dataset)
    train_and_export(BaselineConfig(name="deepcod-c6-l4", kind="deepcod", quantizer={"levels": 4}, network=[
        {"name": "separable-extractor", "args": {"out_channels": 6, "width": 8}},
        {"name": "conv-head", "args": {"widths": [16], "pool": "average"}}], **common),
        folder / "deepcod-c6-l4", folder / "runs-b", dataset)
    # an AgileNN variant at 1 bit, fine-tuned from the bundle itself, as configs/variants/ does
    from partitioner.export import export_bundle
    from partitioner.testing import tiny_config
    from partitioner.train import Trainer

    variant = tiny_config(name="tiny-l2", quantizer={"levels": 2}, fine_tune_from=str(tiny_bundle.folder),
                          joint_training={"epochs": 1, "batch_size": 32, "lr": 0.01})
    tuned = Trainer(variant, folder / "runs-v", dataset=dataset, progress=False).run()
    variants = folder / "variants"  # no bundle itself: the baselines' scan passes over it
    export_bundle(tuned.model, tuned.reference_extractor, variant, dataset, variants / "tiny-l2")
    data = build(tiny_bundle.folder, folder, dataset=dataset, variants=variants)
    return write_measured(folder / "measured.json", data)


def test_measured_file_holds_every_scheme_and_cut(measured_file):
    data = load_measured(measured_file)
    kinds = {s.name: s.kind for s in data.schemes}
    assert kinds == {"agilenn": "agilenn", "local-tiny": "local-only", "local-large": "local-only",
                     "full-offload": "full-offload", "deepcod": "deepcod"}
    names = [c.name for c in data.cuts]
    assert names[0] == "input" and names[-1] == "logits" and len(names) >= 4
    agile = data.scheme("agilenn")
    assert agile.payload_bytes > 0 and agile.device_layers and agile.cloud_layers
    # the bundle hash (71 bytes) is named once per stream, not in every request
    assert 14 < data.protocol.request_overhead_bytes < 71
    curve = {p.name: p for p in data.tradeoff if p.family == "agilenn"}
    assert set(curve) == {"agilenn", "tiny-l2"}
    assert (curve["agilenn"].levels, curve["tiny-l2"].levels) == (4, 2)
    assert curve["tiny-l2"].device_macs == curve["agilenn"].device_macs > 0


def test_refreshing_agilenn_replaces_its_scheme_and_point_and_keeps_the_rest(measured_file):
    from partitioner.simdata import refresh_agilenn
    from partitioner.testing import synthetic_dataset

    before = load_measured(measured_file)
    variant = next(p for p in before.tradeoff if p.name == "tiny-l2")
    refreshed = refresh_agilenn(measured_file.parent / "variants" / "tiny-l2", before, synthetic_dataset())
    agile = refreshed.scheme("agilenn")
    assert (agile.levels, agile.accuracy, agile.payload_bytes) == (2, variant.accuracy, variant.payload_bytes)
    assert [s.name for s in refreshed.schemes] == [s.name for s in before.schemes]
    assert [s for s in refreshed.schemes if s.name != "agilenn"] == [s for s in before.schemes if s.name != "agilenn"]
    assert refreshed.cuts == before.cuts
    curve = {p.name: p for p in refreshed.tradeoff}
    assert curve["agilenn"].levels == 2 and curve["tiny-l2"] == variant
    assert [p.name for p in refreshed.tradeoff] == [p.name for p in before.tradeoff]
    # another reference network: the kept rows would be stale
    other = before.model_copy(update={"schemes": [s.model_copy(update={"accuracy_reference": 0.5})
                                                  if s.name == "agilenn" else s for s in before.schemes]})
    with pytest.raises(ValueError, match="another reference network"):
        refresh_agilenn(measured_file.parent / "variants" / "tiny-l2", other, synthetic_dataset())


def test_simulate_json_has_the_promised_fields(measured_file, capsys):
    assert simulate_main(["--measured", str(measured_file), "--device", "stm32f746-216mhz",
                          "--link", "wifi-6mbps", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in result["schemes"]]
    assert {"agilenn", "local-tiny", "full-offload", "layer-split", "deepcod"} <= set(names)
    for s in result["schemes"]:
        assert {"name", "accuracy", "device_macs", "payload_bytes", "latency_ms", "energy_mj", "fits_device"} <= set(s)
        parts = s["latency_ms"]
        assert parts["total_ms"] == pytest.approx(sum(parts[k] for k in
                                                      ("device_ms", "encode_ms", "network_ms", "cloud_ms", "return_ms")))
    summary = result["summary"]
    for key in ("speedup_vs_local_only", "device_macs_ratio_vs_local_only", "bytes_ratio_vs_full_offload"):
        assert summary[key] > 0
    assert set(summary["crossover_kbps"]) == {"full-offload", "layer-split", "deepcod"}


def test_report_writes_markdown_and_plots(measured_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert simulate_main(["sweep", "--measured", str(measured_file), "--device", "stm32f746-216mhz",
                          "--links", "ble-270kbps,wifi-6mbps", "--report", str(out)]) == 0
    text = (out / "report.md").read_text()
    for name in ("latency_breakdown.png", "accuracy_vs_bytes.png", "latency_vs_bandwidth.png"):
        assert (out / name).stat().st_size > 5000 and name in text
    assert "## ble-270kbps" in text and "## wifi-6mbps" in text and "Source:" in text
    assert "| agilenn | tiny-l2 | 4 | 1 |" in text  # the variant is a row of the accuracy-vs-bytes table


def test_recommend_names_the_fastest_scheme_over_the_floor(measured_file, capsys):
    data = load_measured(measured_file)
    device, link, cloud = load_device("esp32-s3"), load_link("ble-270kbps"), load_device("host")
    result = compare.recommend(data, device, link, cloud, min_accuracy=0.0)
    eligible = [c for c in result["candidates"] if c["eligible"]]
    assert result["recommended"] == min(eligible, key=lambda c: c["latency_ms"]["total_ms"])["name"]
    impossible = compare.recommend(data, device, link, cloud, min_accuracy=1.01)
    assert impossible["recommended"] is None and all(c["why_not"] for c in impossible["candidates"])
    assert simulate_main(["recommend", "--measured", str(measured_file), "--device", "esp32-s3",
                          "--link", "ble-270kbps", "--min-accuracy", "0.0"]) == 0
    assert "recommended:" in capsys.readouterr().out


def test_missing_measured_file_says_how_to_make_it(tmp_path, capsys):
    assert simulate_main(["--measured", str(tmp_path / "none.json")]) == 1
    assert "python -m partitioner.simdata" in capsys.readouterr().err


def test_deepcod_and_full_offload_bundles_are_served_by_the_runtime(measured_file, trained_tiny_bundle, tmp_path):
    tiny_bundle = trained_tiny_bundle
    from agilenn.bundle import Bundle
    from cloud_worker.testing import ServerThread
    from device_agent import MIXED, DeviceAgent, DeviceConfig
    from partitioner.splits import export_cut, load_reference
    from partitioner.testing import synthetic_dataset

    dataset = synthetic_dataset()
    ref = load_reference(tiny_bundle.folder / tiny_bundle.manifest.files["checkpoint"])
    full = export_cut(ref, "input", dataset, tmp_path / "full-offload", codec="zlib-v1")
    assert full.manifest.metrics.accuracy == pytest.approx(tiny_bundle.manifest.metrics.accuracy_reference)
    assert full.manifest.metrics.payload_bytes_median < 16 * 16  # zlib beats the raw bytes
    images = dataset.test.images[:8]
    for bundle in (Bundle(measured_file.parent / "deepcod-c6-l4"), full):
        _, indices = bundle.session("device").run(None, {"image": bundle.prepare(images)})
        (remote,) = bundle.session("remote").run(None, {"remote_indices": indices})
        with ServerThread(bundle) as server, \
                DeviceAgent(bundle, DeviceConfig(cloud=[server.address], deadline_ms=5000)) as agent:
            assert agent.wait_ready(10)
            results = [agent.infer(image) for image in images]
        assert all(r.source == MIXED for r in results)
        assert [r.label for r in results] == remote.argmax(1).tolist()  # alpha 0: the remote answer alone


def test_a_sweep_without_links_says_so(measured_file, capsys):
    assert simulate_main(["sweep", "--measured", str(measured_file), "--device", "stm32f746-216mhz",
                          "--links", ","]) == 2
    assert "--links names no link" in capsys.readouterr().err


def test_report_takes_a_link_given_as_a_yaml_file(measured_file, tmp_path, capsys):
    from simulation.profiles import PROFILE_DIR

    link_file = tmp_path / "my.yaml"
    text = (PROFILE_DIR / "links" / "wifi-6mbps.yaml").read_text()
    link_file.write_text(text.replace("name: wifi-6mbps", "name: my-link"))
    out = tmp_path / "report"
    assert simulate_main(["--measured", str(measured_file), "--device", "stm32f746-216mhz",
                          "--link", str(link_file), "--report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## my-link" in text and "- **my-link** (derived)" in text
