"""Hand-made device and link profiles for the simulation tests (a module beside them, not a test file,
so every runner imports it the same way)."""

from simulation.profiles import DeviceProfile, LinkProfile


def device(**compute) -> DeviceProfile:
    return DeviceProfile.model_validate({
        "name": "toy", "description": "toy", "kind": "microcontroller", "calibration": "estimate",
        "source": "hand-made for tests",
        "compute": {"macs_per_s": 1e6, "dense_macs_per_s": 1e7, "dense_inner_min": 16, "fixed_ms": 0.5,
                    "encode_ns_per_symbol": 1000.0, **compute},
        "memory": {"sram_bytes": 10_000, "flash_bytes": 50_000, "runtime_sram_bytes": 1_000,
                   "runtime_flash_bytes": 20_000},
        "power": {"compute_mw": 100.0, "transmit_mw": 400.0, "receive_mw": 200.0},
    })


def link(**fields) -> LinkProfile:
    data = {"name": "toy", "description": "toy", "calibration": "estimate", "source": "hand-made for tests",
            "uplink_bps": 8000.0, "rtt_ms": 10.0, "mtu_bytes": 110, "packet_overhead_bytes": 10}
    data.update(fields)
    return LinkProfile.model_validate(data)
