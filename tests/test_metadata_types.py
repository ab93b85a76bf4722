"""Every Arrow type a dataset column can have reaches the scenes' metadata as documented JSON, on SQLite and
PostgreSQL (jsonb), and no value can fail an import."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import encode_image, write_parquet_dataset
from hf_ingest.jobstore import JobStatus
from hf_ingest.metadata import MAX_VALUE_JSON_BYTES, json_value
from tests.hub_server import HubServer
from tests.test_jobstore_sql import _fresh_database

UTC_NOON = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

# column: (Arrow array of one value, the JSON the scene must hold)
EVERY_TYPE: dict[str, tuple[pa.Array, Any]] = {
    "timestamp": (pa.array([dt.datetime(2024, 5, 1, 12, 0, 0)], pa.timestamp("us")), "2024-05-01T12:00:00"),
    "timestamp_tz_ns": (pa.array([UTC_NOON], pa.timestamp("ns", tz="Europe/Paris")), "2024-05-01T14:00:00+02:00"),
    "timestamp_ns": (pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")), "2023-11-14T22:13:20.123456789"),
    "date32": (pa.array([dt.date(2024, 5, 1)], pa.date32()), "2024-05-01"),
    "date64": (pa.array([dt.date(1999, 12, 31)], pa.date64()), "1999-12-31"),
    "time64": (pa.array([dt.time(12, 30, 1, 500)], pa.time64("us")), "12:30:01.000500"),
    "time32": (pa.array([dt.time(23, 59, 59)], pa.time32("s")), "23:59:59"),
    "duration": (pa.array([dt.timedelta(days=1, seconds=3, microseconds=5)], pa.duration("us")), "PT86403.000005S"),
    "duration_ns": (pa.array([-1_500_000_001], pa.duration("ns")), "-PT1.500000001S"),
    "decimal128": (pa.array([decimal.Decimal("12345.6789")], pa.decimal128(12, 4)), "12345.6789"),
    "decimal256": (pa.array([decimal.Decimal("-1.50")], pa.decimal256(40, 2)), "-1.50"),
    "binary": (pa.array([b"\x00\x01\xff"], pa.binary()), {"base64": "AAH/", "bytes": 3}),
    "large_binary": (pa.array([b"x" * 5000], pa.large_binary()), {"base64": None, "bytes": 5000}),
    "int_beyond_2_53": (pa.array([2**62], pa.int64()), str(2**62)),
    "uint64_max": (pa.array([2**64 - 1], pa.uint64()), str(2**64 - 1)),
    "int_safe": (pa.array([-(2**53 - 1)], pa.int64()), -(2**53 - 1)),
    "float_nan": (pa.array([float("nan")], pa.float64()), None),
    "float_inf": (pa.array([float("-inf")], pa.float32()), None),
    "float16": (pa.array([1.5], pa.float16()), 1.5),
    "string_with_nul": (pa.array(["a\x00b"], pa.string()), "a\ufffdb"),
    "large_string": (pa.array(["é 漢字 🙂"], pa.large_string()), "é 漢字 🙂"),
    "list": (pa.array([[1, 2, None]], pa.list_(pa.int32())), [1, 2, None]),
    "large_list": (pa.array([[2**60]], pa.large_list(pa.int64())), [str(2**60)]),
    "fixed_size_list": (pa.array([[0.5, 1.0]], pa.list_(pa.float32(), 2)), [0.5, 1.0]),
    "struct": (pa.array([{"a": 1, "b": "x"}]), {"a": 1, "b": "x"}),
    "nested_list_of_structs": (
        pa.array([[{"when": dt.date(2020, 1, 1), "scores": [float("nan"), 2.5]}]]),
        [{"when": "2020-01-01", "scores": [None, 2.5]}],
    ),
    "map": (pa.array([[("k", 1), ("j", 2)]], pa.map_(pa.string(), pa.int64())), {"k": 1, "j": 2}),
    "dictionary": (pa.array(["cat"]).dictionary_encode(), "cat"),
    "null": (pa.array([None], pa.null()), None),
    "bool": (pa.array([True]), True),
    "huge_text": (pa.array(["y" * (MAX_VALUE_JSON_BYTES + 1)]), "left out"),
}


def _every_type_parquet(folder: Path, rows: int = 3) -> Path:
    """A parquet file as pyarrow, pandas or Spark write one: no `datasets` metadata in the schema, an image
    column stored as {bytes, path}, and a column of every Arrow type beside it."""
    images = pa.array(
        [{"bytes": encode_image((20 + i, 10), "PNG", color=(i, 1, 2)), "path": None} for i in range(rows)]
        + [{"bytes": b"broken", "path": None}],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    columns = {"image": images}
    for name, (array, _) in EVERY_TYPE.items():
        columns[name] = pa.concat_arrays([array] * (rows + 1)) if not isinstance(array, pa.DictionaryArray) else (
            pa.array(["cat"] * (rows + 1)).dictionary_encode()
        )
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "data" / "train-00000-of-00001.parquet", row_group_size=2)
    return folder


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_dataset_with_every_arrow_type_imports_completely(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if database == "postgresql":
        monkeypatch.setenv("DATABASE_URL", _fresh_database(request.getfixturevalue("postgres_url")))
        runtime.reset()
    repo = f"tester/every-type-{uuid.uuid4().hex[:8]}"
    hub.publish(repo, _every_type_parquet(tmp_path / "repo"))
    job_id = uuid.uuid4()

    state = asyncio.run(hf_ingest(dataset=repo, job_id=job_id, return_state=True))

    job = runtime.job_store().get_job(job_id)
    assert job and state.is_completed() and job.status is JobStatus.COMPLETED, job and job.error
    assert job.progress["scenes_recorded"] == 3 and job.progress["invalid"] == {"not_an_image": 1}
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        stored = [row.metadata for row in conn.execute(sa.text("select metadata from scenes"))]
    assert len(stored) == 3
    for metadata in stored:
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        for name, (_, expected) in EVERY_TYPE.items():
            if expected == "left out":
                assert name not in metadata
            else:
                assert metadata[name] == expected, name
    assert sum("huge_text" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.usefixtures("prefect_api")
def test_class_labels_carry_their_names(isolated_settings: Path) -> None:
    from datasets import ClassLabel, List

    labels = ClassLabel(names=["cat", "dog", "bird"])
    rows = [{"image": encode_image((10 + i, 10), "PNG"), "label": i % 3, "tags": [0, 2] if i else [], "name_check": "x"}
            for i in range(3)]
    rows.append({"image": encode_image((40, 10), "PNG"), "label": -1, "tags": [], "name_check": "y"})
    folder = write_parquet_dataset(isolated_settings / "labelled", rows, extra_features={"label": labels, "tags": List(labels)})
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(folder), job_id=job_id))
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        stored = sorted(
            (json.loads(row.metadata) for row in conn.execute(sa.text("select metadata from scenes"))),
            key=lambda m: (m["label"] < 0, m["label"]),
        )
    assert [(m["label"], m["label_name"], m["tags_name"]) for m in stored] == [
        (0, "cat", []), (1, "dog", ["cat", "bird"]), (2, "bird", ["cat", "bird"]), (-1, None, []),
    ]


def test_json_value_never_raises_and_always_gives_json() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    for value in (Odd(), {1: "a", (2, 3): "b"}, [(1, 2), (1, 3)], {"nested": [b"\x00" * 2000]}, decimal.Decimal("NaN")):
        json.dumps(json_value(value), allow_nan=False)
    assert json_value({1: "a"}) == {"1": "a"}
    assert json_value(decimal.Decimal("NaN")) is None
    assert json_value([(1, 2), (1, 3)]) == [[1, 2], [1, 3]]  # a list of pairs with repeated keys is no map
