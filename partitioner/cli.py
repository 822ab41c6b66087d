"""`agilenn partition --config FILE --out BUNDLE`: train a split and export a verified bundle.

Training state goes to a run folder (default runs/<config name>); rerunning the same
command resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agilenn partition", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--run-dir", default=None, help="checkpoints and metrics (default: runs/<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from partitioner.config import load_config
    from partitioner.export import export_bundle
    from partitioner.train import Trainer

    config = load_config(args.config)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it")
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    started = time.time()
    result = Trainer(config, run_dir, progress=not args.quiet).run()
    bundle = export_bundle(result.model, result.reference_extractor, config, result.dataset, out, overwrite=True)
    metrics = bundle.recorded_metrics.model_dump(exclude={"verification"}, exclude_unset=True)
    print(json.dumps({"bundle": str(out), "bundle_hash": bundle.bundle_hash,
                      "seconds_this_run": round(time.time() - started, 1), **metrics}))
    return 0
