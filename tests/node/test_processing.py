"""A visit's result objects are all stored or none: what store_results put in the node is taken back
when the transaction after it fails, so Q/R never serves results the database lacks; one visit is
processed by one worker at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from node.service import Node
from node.work.processing import visit_lock
from node.work.results import discard_results, publish, store_results
from storage import models as m
from tests.support.dicom_factory import CORONAL, mr_image


def count(node: Node, model: type, **where: object) -> int:
    node.settle()
    with node.sessions() as s:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return int(s.scalar(query) or 0)


def test_discarded_results_leave_no_rows_files_or_empty_series(node: Node) -> None:
    study, kept_series, result_series = generate_uid(), generate_uid(), generate_uid()
    kept = mr_image(study_uid=study, series_uid=kept_series, orientation=CORONAL, position=(0.0, 0.0, 0.0))
    stored = store_results(node.settings, node.sessions, node.store, [("stitched_t2", kept)])
    results = [mr_image(study_uid=study, series_uid=result_series, orientation=CORONAL, position=(0.0, 0.0, -5.0 * k))
               for k in range(3)]
    taken = store_results(node.settings, node.sessions, node.store, [("stitched_t2", ds) for ds in results])
    node.settle()
    with node.sessions() as s:
        paths = [node.store.absolute(s.get(m.Instance, i).file_path) for i in (r.instance_id for r in taken)]
    assert all(p.is_file() for p in paths) and count(node, m.Series, series_instance_uid=result_series) == 1

    assert discard_results(node.sessions, node.store, taken) == 3
    assert not any(p.exists() for p in paths)
    assert count(node, m.Series, series_instance_uid=result_series) == 0
    assert sum(count(node, m.Instance, sop_instance_uid=str(ds.SOPInstanceUID)) for ds in results) == 0
    # the other series of the study is untouched
    assert count(node, m.Instance, id=stored[0].instance_id) == 1 and count(node, m.Series, series_instance_uid=kept_series) == 1


def test_a_result_the_node_refuses_takes_back_the_ones_before_it(node: Node) -> None:
    study, series = generate_uid(), generate_uid()
    good = mr_image(study_uid=study, series_uid=series, orientation=CORONAL, position=(0.0, 0.0, 0.0))
    bad = mr_image(study_uid=study, series_uid=series, orientation=CORONAL, position=(0.0, 0.0, -5.0))
    bad.SeriesInstanceUID = "1." + "2" * 140  # longer than the index holds: refused
    with pytest.raises(RuntimeError, match=rf"result seg {bad.SOPInstanceUID} not stored"):
        store_results(node.settings, node.sessions, node.store, [("sr", good), ("seg", bad)])
    assert count(node, m.Instance, sop_instance_uid=str(good.SOPInstanceUID)) == 0
    assert count(node, m.Series, series_instance_uid=series) == 0


def test_published_results_are_rows_and_outbox_entries_or_nothing(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """publish: stored, its result row and its outbox entries in one go; when the rows cannot be written the
    stored object is taken back."""
    from node.settings import Destination
    from node.work import results

    study = generate_uid()
    first = mr_image(study_uid=study, series_uid=generate_uid(), orientation=CORONAL, position=(0.0, 0.0, 0.0))
    settings = node.settings.model_copy(update={"forward": node.settings.forward.model_copy(update={
        "destinations": [Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)]})})
    (published,) = publish(settings, node.sessions, node.store, None, [("stitched_t2", first)])
    with node.sessions() as s:
        row = s.scalars(select(m.ResultObject).where(m.ResultObject.instance_fk == published.instance_id)).one()
        assert (row.kind, row.sop_instance_uid) == (m.ResultKind.STITCHED_T2, str(first.SOPInstanceUID))
        assert count(node, m.OutboxItem, instance_fk=published.instance_id) == 1

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database refused the result rows")

    second = mr_image(study_uid=study, series_uid=generate_uid(), orientation=CORONAL, position=(0.0, 0.0, 0.0))
    monkeypatch.setattr(results, "record_results", refuse)
    with pytest.raises(RuntimeError, match="refused the result rows"):
        publish(settings, node.sessions, node.store, None, [("stitched_t2", second)])
    assert count(node, m.Instance, sop_instance_uid=str(second.SOPInstanceUID)) == 0


def test_one_visit_is_processed_by_one_worker_at_a_time(tmp_path: Path) -> None:
    """A visit re-opened while its first job runs waits for it (two runs would share a QC folder and rows)."""
    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with visit_lock(tmp_path, 7):
            order.append("first start")
            first_in.set()
            time.sleep(0.3)
            order.append("first end")

    def second() -> None:
        first_in.wait(5)
        with visit_lock(tmp_path, 7):
            order.append("second start")

    def other_visit() -> None:
        first_in.wait(5)
        with visit_lock(tmp_path, 8):
            order.append("other visit")

    threads = [threading.Thread(target=f) for f in (first, second, other_visit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order.index("second start") > order.index("first end")
    assert order.index("other visit") < order.index("first end")  # other visits are not held up
