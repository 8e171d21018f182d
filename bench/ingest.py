"""Ingest throughput: dcmtk storescu pushes the same files into myonode, dcmtk storescp and Orthanc.

Two file sets: a visit-shaped set (6 coronal T2 stations × 50 slices of 512×512 and 8 axial
DWI stations × 50 slices × 2 b-values of 192×192, 16-bit) and many small instances (64×64).
Each receiver runs on loopback, one after another, and gets one storescu association.
myonode fsyncs and indexes every instance before acknowledging it; storescp and Orthanc
run with their defaults; "pynetdicom_null" is a bare pynetdicom SCP that acknowledges
without storing, the ceiling for any receiver built on pynetdicom. Prints JSON: instances/s, MB/s and myonode's ratio to each.

    python bench/ingest.py [--small N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402

from node.demo.orthanc import start_orthanc  # noqa: E402
from node.demo.ports import free_port  # noqa: E402
from tests.support.dicom_factory import AXIAL, CORONAL, mr_image  # noqa: E402

# Debian's dcmtk (also inside Orthanc) leaves Nagle's algorithm on unless TCP_NODELAY=1 is set,
# which costs every small DIMSE message a delayed-ACK wait (~40 ms); every peer here runs with it
# off, as myonode's listener does.
os.environ["TCP_NODELAY"] = "1"
DCMTK_ENV = dict(os.environ)


def visit_files(folder: Path, t2_stations: int, dwi_stations: int, slices: int) -> list[Path]:
    """A whole-body-visit-shaped set of classic MR files (pixel noise; geometry like the protocol)."""
    folder.mkdir(parents=True)
    study = generate_uid()
    paths = []
    n = 0
    for st in range(t2_stations):
        series = generate_uid()
        for i in range(slices):
            ds = mr_image(study_uid=study, series_uid=series, orientation=CORONAL, size=512, seed=n,
                          description=f"WB T2 TSE st{st + 1}", position=(-200.0, 5.0 * i, 400.0 - 360 * st),
                          instance_number=i + 1)
            n += 1
            paths.append(folder / f"{n:05d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
    for st in range(dwi_stations):
        series = generate_uid()
        for i in range(slices):
            for b in (0.0, 1000.0):
                ds = mr_image(study_uid=study, series_uid=series, orientation=AXIAL, size=192, seed=n, b_value=b,
                              philips_private_b=True, description=f"WB DWI st{st + 1}",
                              position=(-220.0, -220.0, -5.0 * i - 230 * st), instance_number=2 * i + int(b > 0) + 1)
                n += 1
                paths.append(folder / f"{n:05d}.dcm")
                ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def small_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        ds = mr_image(study_uid=study, series_uid=series, size=64, seed=i, instance_number=i + 1,
                      position=(0.0, float(i), 0.0))
        paths.append(folder / f"{i:05d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def push(port: int, called: str, files: list[Path]) -> float:
    """Seconds storescu needs to send ``files`` over one association (fails loudly on any error)."""
    start = time.perf_counter()
    # storescu scans directories itself (+sd); one association for the whole set.
    out = subprocess.run(["storescu", "-aet", "BENCH", "-aec", called, "+sd", "+r", "127.0.0.1", str(port),
                          str(files[0].parent)], capture_output=True, text=True, env=DCMTK_ENV, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0 or "Failed" in out.stderr:
        raise RuntimeError(f"storescu to {called} failed: {out.stderr[-1000:]}")
    return elapsed


def run_myonode(work: Path, sets: dict[str, list[Path]]) -> dict[str, float]:
    port = free_port()
    (work / "settings.toml").write_text(
        f'[node]\nport = {port}\n[storage]\nroot = "store"\ndatabase_url = "sqlite:///myonode.db"\n'
        '[queue]\nurl = "sqlite:///queue.db"\n')
    proc = subprocess.Popen([str(Path(sys.executable).parent / "myonode"), "serve", "--config",
                             str(work / "settings.toml"), "--log-level", "WARNING"])
    try:
        wait_port(port)
        return {name: push(port, "MYONODE", files) for name, files in sets.items()}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


NULL_SCP = """
import socket, sys
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer
from node.dimse.conformance import TRANSFER_SYNTAXES, storage_sop_classes

class Server(ThreadedAssociationServer):
    def get_request(self):
        sock, address = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

ae = AE("NULLSCP")
ae.maximum_pdu_size = 262144
for sop_class in storage_sop_classes("all"):
    ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
handler = lambda event: (event.encoded_dataset(), 0x0000)[1]
ae.make_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, handler)],
               server_class=Server).serve_forever()
"""


def run_pynetdicom_null(work: Path, sets: dict[str, list[Path]]) -> dict[str, float]:
    """pynetdicom receiving and acknowledging without storing: the ceiling of any pynetdicom SCP."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NULL_SCP, str(port)], cwd=REPO)
    try:
        wait_port(port)
        return {name: push(port, "NULLSCP", files) for name, files in sets.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_storescp(work: Path, sets: dict[str, list[Path]]) -> dict[str, float]:
    port = free_port()
    out = work / "out"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), "--sort-on-study-uid", "st",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_port(port)
        return {name: push(port, "STORESCP", files) for name, files in sets.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_orthanc(work: Path, sets: dict[str, list[Path]]) -> dict[str, float]:
    orthanc = start_orthanc(work / "orthanc", {})
    try:
        return {name: push(orthanc.dicom_port, orthanc.ae_title, files) for name, files in sets.items()}
    finally:
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000, help="number of small instances")
    parser.add_argument("--quick", action="store_true", help="2 T2 + 2 DWI stations of 20 slices (smoke run)")
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install the Debian package dcmtk (make test does)")
    base = REPO / "var" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        root = Path(tmp)
        stations = (2, 2, 20) if args.quick else (6, 8, 50)
        sets = {"visit": visit_files(root / "files" / "visit", *stations),
                "small": small_files(root / "files" / "small", args.small)}
        sizes = {name: sum(p.stat().st_size for p in files) for name, files in sets.items()}
        results: dict[str, dict[str, float]] = {}
        receivers = (("myonode", run_myonode), ("pynetdicom_null", run_pynetdicom_null),
                     ("storescp", run_storescp), ("orthanc", run_orthanc))
        for name, runner in receivers:
            work = root / name
            work.mkdir()
            results[name] = runner(work, sets)
    report: dict[str, object] = {
        "benchmark": "ingest",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cpu {platform.machine()}",
        "sets": {name: {"instances": len(files), "megabytes": round(sizes[name] / 1e6, 1)}
                 for name, files in sets.items()},
    }
    for name in sets:
        row: dict[str, object] = {}
        for receiver, times in results.items():
            row[receiver] = {"seconds": round(times[name], 2),
                             "instances_per_s": round(len(sets[name]) / times[name], 1),
                             "mb_per_s": round(sizes[name] / 1e6 / times[name], 1)}
        row["myonode_vs_storescp"] = round(results["storescp"][name] / results["myonode"][name], 2)
        row["myonode_vs_orthanc"] = round(results["orthanc"][name] / results["myonode"][name], 2)
        report[name] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
