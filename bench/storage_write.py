"""Durable write path without the network: atomic fsync'd file + committed index row per instance.

Prints JSON: instances/s and MB/s for small (64 KiB) and full-size (512x512x16-bit, ~513 KiB)
instances, file store alone and file store + SQLite index commit. This is the ceiling the
C-STORE SCP can reach on this disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from storage import models as m
from storage.database import make_engine, session_factory, transaction
from storage.filestore import FileStore
from storage.migrate import upgrade

STUDY = "1.2.826.0.1.3680043.10.1"


def bench(size: int, count: int, *, with_index: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "var")) as tmp:
        store = FileStore(Path(tmp))
        factory = None
        if with_index:
            engine = make_engine(f"sqlite:///{tmp}/bench.db")
            upgrade(engine)
            factory = session_factory(engine)
            with transaction(factory) as s:
                series = m.Series(study=m.Study(patient=m.Patient(patient_id="BENCH"), study_instance_uid=STUDY),
                                  series_instance_uid=f"{STUDY}.1")
                s.add(series)
            series_id = series.id
        data = os.urandom(size)
        start = time.perf_counter()
        for i in range(count):
            sop = f"{STUDY}.1.{i + 1}"
            stored = store.write(STUDY, f"{STUDY}.1", sop, data)
            if factory is not None:
                with transaction(factory) as s:
                    s.add(m.Instance(series_fk=series_id, sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                                     file_path=store.relative(stored.path), size_bytes=stored.size_bytes,
                                     sha256=stored.sha256, received_at=datetime.now(UTC)))
        elapsed = time.perf_counter() - start
    return {"instances": count, "bytes_each": size, "seconds": round(elapsed, 3),
            "instances_per_s": round(count / elapsed, 1), "mb_per_s": round(count * size / elapsed / 1e6, 2)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None,
                            epilog="BENCH_DIR: where the temporary store goes (default var)").parse_args()
    Path(os.environ.get("BENCH_DIR", "var")).mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "storage_write",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cpu {platform.machine()}",
        "small_file_only": bench(64 * 1024, 300, with_index=False),
        "small_file_and_index": bench(64 * 1024, 300, with_index=True),
        "full_file_only": bench(512 * 512 * 2 + 1200, 200, with_index=False),
        "full_file_and_index": bench(512 * 512 * 2 + 1200, 200, with_index=True),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
