"""The device agent's per-request records hold only what is read: no field kept for nobody."""

from dataclasses import fields

from device_agent import Result
from device_agent.link import Slot


def test_a_result_is_exactly_its_json_fields():
    assert [f.name for f in fields(Result)] == ["index", "label", "label_name", "probabilities", "source", "reason",
                                                "timings_ms", "local_label", "payload_bytes", "worker_id", "id",
                                                "on_time_probability", "hedged", "reason_code"]
    result = Result(index=0, label=1, label_name="b", probabilities=[0.25, 0.75], source="mixed", reason=None,
                    timings_ms={"total": 1.23456})
    assert list(result.to_json()) == [f.name for f in fields(Result)]
    assert result.to_json()["timings_ms"] == {"total": 1.2346}


def test_a_slot_holds_the_answer_and_when_it_was_sent():
    assert set(Slot.__slots__) == {"event", "response", "failure", "sent_at"}
