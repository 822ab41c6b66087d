"""The measured-schemes file as typed models: the committed file loads, broken files say where."""

import json
from pathlib import Path

import pytest

from agilenn.measured import (
    SCHEMA,
    CutRecord,
    MeasuredDataError,
    MeasuredSchemes,
    ProtocolOverheads,
    Scheme,
    TradeoffPoint,
    load_measured,
    write_measured,
)

COMMITTED = Path(__file__).resolve().parents[1] / "bundles" / "baselines" / "measured.json"
LAYER = {"name": "conv", "op": "conv", "macs": 900, "inner": 9, "weight_bytes": 40, "in_bytes": 100, "out_bytes": 400}


def small() -> MeasuredSchemes:
    """Built the way partitioner.simdata builds it: each scheme with the fields its kind has."""
    cut = CutRecord(name="input", index=0, device_layers=[], cloud_layers=[LAYER], activation_shape=[1, 4, 4],
                    codec="zlib-v1", payload_bytes_median=12.0, accuracy=0.8, encode_symbols=16, scale=1.0,
                    payload_bytes_mean=12.5, payload_bytes_zlib_median=12.0, payload_bytes_range_median=14.0,
                    raw_bytes=16)
    logits = CutRecord(name="logits", index=3, device_layers=[LAYER], cloud_layers=[], activation_shape=[2],
                       codec=None, payload_bytes_median=0.0, accuracy=0.8, encode_symbols=0)
    agilenn = Scheme(name="agilenn", kind="agilenn", bundle="b", bundle_hash="sha256:0", accuracy=0.75,
                     payload_bytes=3.0, payload_bytes_p99=5.0, codec="range-v1", levels=4, offloaded_channels=1,
                     encode_symbols=16, input_bytes=16, device_layers=[LAYER], cloud_layers=[LAYER],
                     alternatives={"bitpack-v1": 4, "zlib-v1": 6.0}, accuracy_local_only=0.7, alpha_local=0.5,
                     accuracy_reference=0.8)
    local = Scheme(name="local-tiny", kind="local-only", bundle="l", accuracy=0.7, payload_bytes=0.0,
                   encode_symbols=0, input_bytes=16, device_layers=[LAYER], cloud_layers=[])
    full = Scheme(name="full-offload", kind="full-offload", cut="input", accuracy=0.8, payload_bytes=12.0,
                  codec="zlib-v1", input_bytes=16, encode_symbols=16, device_layers=[], cloud_layers=[LAYER])
    point = TradeoffPoint(family="agilenn", name="agilenn", accuracy=0.75, payload_bytes=3.0, levels=4,
                          offloaded_channels=1, codec="range-v1", device_macs=900)
    return MeasuredSchemes(schema=SCHEMA, dataset="toy", samples=10, created="2026-01-01", command="test",
                           raw_input_bytes=16, classes=2,
                           protocol=ProtocolOverheads(request_overhead_bytes=30, response_bytes=50,
                                                      raw_response_bytes=8),
                           schemes=[agilenn, local, full], cuts=[cut, logits], tradeoff=[point])


def test_the_committed_file_loads_and_writes_back_the_same_values():
    measured = load_measured(COMMITTED)
    assert measured.schema_id == SCHEMA
    assert {s.kind for s in measured.schemes} == {"agilenn", "local-only", "full-offload", "deepcod"}
    assert measured.scheme("deepcod").variant and measured.cut("logits").codec is None
    assert json.loads(measured.to_json()) == json.loads(COMMITTED.read_text())


def test_write_then_load_gives_the_same_models(tmp_path):
    data = small()
    path = write_measured(tmp_path / "measured.json", data)
    assert load_measured(path) == data
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA
    local = raw["schemes"][1]
    assert "codec" not in local and "levels" not in local  # never measured: absent, not null
    assert raw["cuts"][1]["codec"] is None  # measured as "nothing is coded": kept


def _broken(tmp_path, change) -> Path:
    data = json.loads(small().to_json())
    change(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    return path


def test_another_schema_is_named_with_the_file(tmp_path):
    path = _broken(tmp_path, lambda d: d.update(schema="agilenn-simdata-v0"))
    with pytest.raises(MeasuredDataError, match=rf"{path}: schema 'agilenn-simdata-v0', this agilenn reads"):
        load_measured(path)


def test_a_missing_field_is_named_with_the_file(tmp_path):
    path = _broken(tmp_path, lambda d: d["schemes"][1].pop("accuracy"))
    with pytest.raises(MeasuredDataError, match=r"broken\.json: schemes\[1\]\.accuracy: Field required"):
        load_measured(path)
    path = _broken(tmp_path, lambda d: d["protocol"].pop("response_bytes"))
    with pytest.raises(MeasuredDataError, match=r"broken\.json: protocol\.response_bytes: Field required"):
        load_measured(path)


def test_a_quantized_scheme_needs_its_coder_and_the_file_an_agilenn_scheme(tmp_path):
    path = _broken(tmp_path, lambda d: d["schemes"][0].pop("levels"))
    with pytest.raises(MeasuredDataError, match=r"schemes\[0\]: a scheme of kind 'agilenn' needs levels"):
        load_measured(path)
    path = _broken(tmp_path, lambda d: d.update(schemes=d["schemes"][1:]))
    with pytest.raises(MeasuredDataError, match=r"broken\.json: schemes: holds no AgileNN scheme"):
        load_measured(path)


def test_an_unknown_field_or_a_file_that_is_not_json_is_an_error(tmp_path):
    path = _broken(tmp_path, lambda d: d["cuts"][0].update(payload_bytes=3))
    with pytest.raises(MeasuredDataError, match=r"cuts\[0\]\.payload_bytes: Extra inputs are not permitted"):
        load_measured(path)
    path.write_text("{")
    with pytest.raises(MeasuredDataError, match="not JSON"):
        load_measured(path)


def test_a_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(MeasuredDataError, match="python -m partitioner.simdata"):
        load_measured(tmp_path / "none.json")
