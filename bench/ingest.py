"""Ingest throughput: dcmtk storescu pushes the same files into myonode's two receivers, dcmtk storescp and Orthanc.

Three file sets: a visit-shaped set (6 coronal T2 stations × 50 slices of 512×512 and 8 axial
DWI stations × 50 slices × 2 b-values of 192×192, 16-bit) and many small instances (64×64),
each sent by one storescu association; and "concurrent", 20 storescu processes at once, each
with its own 40 instances of 128×128. Each receiver runs on loopback, one after another.
myonode acknowledges every instance once it is fsync'd in its journal (README, Durability) and
runs as configured by default ("myonode": the compiled receiver on DCMTK's libdcmnet,
node/dimse/compiled.py) and with ``[node] receiver = "pynetdicom"`` ("myonode_pynetdicom", the
fallback); storescp (which makes nothing durable: the ceiling of a DCMTK receiver) and Orthanc
run with their defaults; "pynetdicom_null" (with ``--null``) is a bare pynetdicom SCP that
acknowledges without storing, with myonode's reactor adapter (node/dimse/reactor.py): the
ceiling of any receiver built on pynetdicom.
Prints JSON: instances/s, MB/s, the ratios of myonode's receivers to Orthanc and storescp, and for
myonode when the last instance was indexed (acknowledged means durable; the index follows).

    python bench/ingest.py [--sets visit,small,concurrent] [--small N] [--quick] [--null] [--rounds K]
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
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from statistics import median

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


def concurrent_files(folder: Path, associations: int, each: int) -> list[list[Path]]:
    """``associations`` folders of ``each`` 128×128 instances (one series per folder)."""
    groups = []
    for a in range(associations):
        study, series = generate_uid(), generate_uid()
        sub = folder / f"a{a:02d}"
        sub.mkdir(parents=True)
        paths = []
        for i in range(each):
            ds = mr_image(study_uid=study, series_uid=series, size=128, seed=a * each + i, instance_number=i + 1,
                          position=(0.0, float(i), 0.0))
            paths.append(sub / f"{i:05d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
        groups.append(paths)
    return groups


def push(port: int, called: str, groups: list[list[Path]]) -> float:
    """Seconds until one storescu per group (all at once) has sent its files over its own association."""
    start = time.perf_counter()
    # storescu scans directories itself (+sd): one association per folder.
    procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", called, "+sd", "+r", "127.0.0.1", str(port),
                               str(files[0].parent)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=DCMTK_ENV) for files in groups]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - start
    for proc, (_, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or "Failed" in err:
            raise RuntimeError(f"storescu to {called} failed: {err[-1000:]}")
    return elapsed


def run_myonode(work: Path, sets: dict[str, list[list[Path]]], receiver: str = "dcmtk") -> dict[str, float]:
    port = free_port()
    (work / "settings.toml").write_text(
        f'[node]\nport = {port}\nmax_associations = 32\nreceiver = "{receiver}"\n'
        '[storage]\nroot = "store"\ndatabase_url = "sqlite:///myonode.db"\n[queue]\nurl = "sqlite:///queue.db"\n'
        '[web]\nenabled = false\n')
    proc = subprocess.Popen([str(Path(sys.executable).parent / "myonode"), "serve", "--config",
                             str(work / "settings.toml"), "--log-level", "WARNING"])
    journal = work / "store" / "journal"
    try:
        wait_port(port)
        out = {}
        for name, files in sets.items():
            started = time.perf_counter()
            out[name] = push(port, "MYONODE", files)
            while any(entry.name.endswith(".dcm") for entry in os.scandir(journal)):  # the indexer catching up
                time.sleep(0.005)
            out[f"{name}:indexed"] = time.perf_counter() - started
        return out
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

if sys.argv[2] == "adapter":
    from node.dimse import reactor
    poll_ms = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    reactor.install(poll_ms)
    handlers = [(evt.EVT_REQUESTED, reactor.handle_requested, [poll_ms])]
else:
    handlers = []
ae = AE("NULLSCP")
ae.maximum_pdu_size = 262144
ae.maximum_associations = 32
for sop_class in storage_sop_classes("all"):
    ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
handler = lambda event: (event.encoded_dataset(), 0x0000)[1]
ae.make_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, handler), *handlers],
               server_class=Server).serve_forever()
"""


def run_pynetdicom_null(work: Path, sets: dict[str, list[list[Path]]], timing: str = "stock") -> dict[str, float]:
    """pynetdicom receiving and acknowledging without storing (``timing``: "stock" or "adapter")."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NULL_SCP, str(port), timing], cwd=REPO)
    try:
        wait_port(port)
        return {name: push(port, "NULLSCP", files) for name, files in sets.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_storescp(work: Path, sets: dict[str, list[list[Path]]]) -> dict[str, float]:
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


def run_orthanc(work: Path, sets: dict[str, list[list[Path]]]) -> dict[str, float]:
    orthanc = start_orthanc(work / "orthanc", {})
    try:
        return {name: push(orthanc.dicom_port, orthanc.ae_title, files) for name, files in sets.items()}
    finally:
        orthanc.stop()


def file_system(path: Path) -> dict[str, object]:
    """The file system the receivers write to: its type, mount options and (ext4) whether it keeps a journal —
    what a durable small write costs depends on all three (README, Receiving). No library reports the
    journal: jbd2 lists each journaled device under /proc/fs/jbd2."""
    st = path.stat()
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    found: dict[str, object] = {}
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:  # ID parent MAJ:MIN root mount-point options ... - type source super-options
            left, _, right = line.partition(" - ")
            fields, (fs_type, source, *extra) = left.split(), right.split()
            if fields[2] == device and path.resolve().is_relative_to(fields[4]):
                found = {"type": fs_type, "source": source, "mount_point": fields[4],
                         "options": ",".join([fields[5], *extra])}
    name = Path(os.path.realpath(f"/sys/dev/block/{device}")).name
    if found.get("type") == "ext4":
        found["journal"] = Path(f"/proc/fs/jbd2/{name}-8").exists()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000, help="number of small instances")
    parser.add_argument("--quick", action="store_true", help="2 T2 + 2 DWI stations of 20 slices (smoke run)")
    parser.add_argument("--null", action="store_true", help="also a bare pynetdicom SCP that stores nothing")
    parser.add_argument("--sets", default="visit,small,concurrent",
                        help="which file sets, comma-separated (default: all three)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="every receiver in turn, this many times; the median of each figure is printed")
    args = parser.parse_args()
    from node.dimse.compiled import binary
    if binary()[0] is None:
        sys.exit(f"the compiled receiver is not usable: {binary()[1]}")
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install the Debian package dcmtk (make test does)")
    base = REPO / "var" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        root = Path(tmp)
        stations = (2, 2, 20) if args.quick else (6, 8, 50)
        makers = {"visit": lambda: [visit_files(root / "files" / "visit", *stations)],
                  "small": lambda: [small_files(root / "files" / "small", args.small)],
                  "concurrent": lambda: concurrent_files(root / "files" / "concurrent", 20, 20 if args.quick else 40)}
        chosen = args.sets.split(",")
        if unknown := set(chosen) - set(makers):
            sys.exit(f"--sets: no file set {', '.join(sorted(unknown))} (there are {', '.join(makers)})")
        sets = {name: makers[name]() for name in chosen}
        sizes = {name: sum(p.stat().st_size for g in groups for p in g) for name, groups in sets.items()}
        counts = {name: sum(len(g) for g in groups) for name, groups in sets.items()}
        rounds: list[dict[str, dict[str, float]]] = []
        receivers: list[tuple[str, Callable[[Path, dict[str, list[list[Path]]]], dict[str, float]]]] = [
            ("myonode", run_myonode), ("myonode_pynetdicom", partial(run_myonode, receiver="pynetdicom")),
            ("storescp", run_storescp), ("orthanc", run_orthanc)]
        if args.null:
            receivers.append(("pynetdicom_null", partial(run_pynetdicom_null, timing="adapter")))
        for turn in range(args.rounds):  # in turn, so that a noisy minute of the machine hits every receiver
            results: dict[str, dict[str, float]] = {}
            for name, runner in receivers:
                work = root / f"{name}-{turn}"
                work.mkdir()
                results[name] = runner(work, sets)
            rounds.append(results)
    report: dict[str, object] = {
        "benchmark": "ingest",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cpu {platform.machine()}",
        "file_system": file_system(base),
        "sets": {name: {"instances": counts[name], "associations": len(groups),
                        "megabytes": round(sizes[name] / 1e6, 1)} for name, groups in sets.items()},
    }
    report["rounds"] = args.rounds
    for name in sets:
        row: dict[str, object] = {}
        for receiver in rounds[0]:
            seconds = median(r[receiver][name] for r in rounds)
            row[receiver] = {"seconds": round(seconds, 2),
                             "instances_per_s": round(counts[name] / seconds, 1),
                             "mb_per_s": round(sizes[name] / 1e6 / seconds, 1)}
            if f"{name}:indexed" in rounds[0][receiver]:  # every instance acknowledged, and then indexed, after
                row[receiver]["all_indexed_after_s"] = round(median(r[receiver][f"{name}:indexed"] for r in rounds), 2)
        for ours in ("myonode", "myonode_pynetdicom"):
            for peer in ("orthanc", "storescp"):
                ratios = [r[peer][name] / r[ours][name] for r in rounds]
                row[f"{ours}_vs_{peer}"] = round(median(ratios), 2)
                row[f"{ours}_vs_{peer}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        report[name] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
